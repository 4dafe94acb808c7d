/*
 * rcguest: what its parts share (see rcguest.c for the subcommands).
 *
 *   rcguest.c   main, command-line and I/O helpers
 *   sha256.c    SHA-256 of the generated stream (its report line)
 *   console.c   gen and echo: payloads on a tty, a file or a pipe
 *   sound.c     tone and record: OSS playback and capture
 */
#ifndef RCGUEST_H
#define RCGUEST_H

#include <stddef.h>
#include <stdint.h>

extern const char *prog;

/* Prints "rcguest: " fmt (with arg), and strerror(errno) when errno is set; exits 1. */
void die(const char *fmt, const char *arg) __attribute__((noreturn));
/* Dies when option argv[i] has no value after it. */
void need_value(int argc, char **argv, int i);
/* Dies with "CMD: unknown option OPT". */
void unknown_option(const char *cmd, const char *opt) __attribute__((noreturn));
unsigned long long parse_num(const char *opt, const char *s);
int write_all(int fd, const uint8_t *p, size_t n);
void make_raw(int fd, const char *dev);
double now_s(void);

struct sha256 {
	uint32_t h[8];
	uint64_t len;
	uint8_t buf[64];
	size_t used;
};

void sha256_init(struct sha256 *s);
void sha256_update(struct sha256 *s, const uint8_t *p, size_t n);
void sha256_hex(struct sha256 *s, char out[65]);

int cmd_gen(int argc, char **argv);
int cmd_echo(int argc, char **argv);
int cmd_tone(int argc, char **argv);
int cmd_record(int argc, char **argv);

#endif
