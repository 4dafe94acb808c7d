/*
 * rcguest: payload helper for the ringcast test guest.
 *
 * Runs inside the guest initramfs (built with `gcc -static -O2`) and on the
 * host for self-tests. Subcommands:
 *
 *   gen  --seed S --bytes N --out DEV [--chunk C]
 *        Write exactly N bytes of the deterministic test stream to DEV (a tty
 *        is switched to raw mode first and kept open until the data is gone).
 *   tone --freq F --ms D --rate R [--dev /dev/dsp] [--volume PCT]
 *        Play a stereo S16_LE sine through OSS.
 *   echo --dev DEV --count N
 *        Raw mode; answer every input line with "got:" + the line until N
 *        input bytes have been read or a line "quit" arrives.
 *   record --ms D --rate R [--dev /dev/dsp] [--volume PCT]
 *        Record a stereo S16_LE stream through OSS (line-in, capture gain PCT)
 *        and report its frequency: rising zero crossings of the left channel
 *        between its first and last sample above 1/32 of full scale.
 *
 * The stream (the host tests reimplement it, so it must not change):
 *   x = seed ? seed : 0x9E3779B97F4A7C15
 *   per 8 output bytes: x ^= x >> 12; x ^= x << 25; x ^= x >> 27;
 *                       v = x * 0x2545F4914F6CDD1D; emit v little-endian
 *   the final block is truncated to N bytes.
 *
 * Reports go to stderr, never to the payload device.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "rcguest.h"

const char *prog = "rcguest";

void die(const char *fmt, const char *arg)
{
	fprintf(stderr, "%s: ", prog);
	fprintf(stderr, fmt, arg);
	if (errno)
		fprintf(stderr, ": %s", strerror(errno));
	fputc('\n', stderr);
	exit(1);
}

void need_value(int argc, char **argv, int i)
{
	if (i + 1 >= argc) {
		errno = 0;
		die("missing value for %s", argv[i]);
	}
}

void unknown_option(const char *cmd, const char *opt)
{
	fprintf(stderr, "%s: %s: unknown option %s\n", prog, cmd, opt);
	exit(1);
}

unsigned long long parse_num(const char *opt, const char *s)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 0);
	if (errno || end == s || *end) {
		errno = 0;
		die("bad number for %s", opt);
	}
	return v;
}

int write_all(int fd, const uint8_t *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			return -1;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* Put a tty into raw 8-bit mode; a no-op for files and pipes. */
void make_raw(int fd, const char *dev)
{
	struct termios t;

	if (!isatty(fd))
		return;
	if (tcgetattr(fd, &t) < 0)
		die("tcgetattr %s", dev);
	cfmakeraw(&t);
	t.c_cflag |= CLOCAL | CREAD;
	t.c_cflag &= ~CRTSCTS;
	t.c_cc[VMIN] = 1;
	t.c_cc[VTIME] = 0;
	if (tcsetattr(fd, TCSANOW, &t) < 0)
		die("tcsetattr %s", dev);
}

double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
usage:
		fprintf(stderr,
			"usage: rcguest gen  --seed S --bytes N --out DEV [--chunk C]\n"
			"       rcguest tone --freq F --ms D --rate R [--dev /dev/dsp] [--volume PCT]\n"
			"       rcguest echo --dev DEV --count N\n"
			"       rcguest record --ms D --rate R [--dev /dev/dsp] [--volume PCT]\n");
		return 2;
	}
	if (!strcmp(argv[1], "gen"))
		return cmd_gen(argc - 2, argv + 2);
	if (!strcmp(argv[1], "tone"))
		return cmd_tone(argc - 2, argv + 2);
	if (!strcmp(argv[1], "echo"))
		return cmd_echo(argc - 2, argv + 2);
	if (!strcmp(argv[1], "record"))
		return cmd_record(argc - 2, argv + 2);
	goto usage;
}
