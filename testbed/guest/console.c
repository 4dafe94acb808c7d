/*
 * gen and echo: the console payloads. gen writes the deterministic test stream (see
 * rcguest.c) and reports its length and SHA-256; echo answers input lines.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include "rcguest.h"

/* ---------- gen ---------- */

int cmd_gen(int argc, char **argv)
{
	unsigned long long seed = 0, bytes = 0, chunk = 65536, done = 0;
	const char *out = NULL;
	int have_bytes = 0, fd, i;
	uint64_t x;
	uint8_t *buf;
	struct sha256 sha;
	char hex[65];
	struct stat st;

	for (i = 0; i < argc; i++) {
		need_value(argc, argv, i);
		if (!strcmp(argv[i], "--seed"))
			seed = parse_num("--seed", argv[++i]);
		else if (!strcmp(argv[i], "--bytes"))
			bytes = parse_num("--bytes", argv[++i]), have_bytes = 1;
		else if (!strcmp(argv[i], "--out"))
			out = argv[++i];
		else if (!strcmp(argv[i], "--chunk"))
			chunk = parse_num("--chunk", argv[++i]);
		else
			unknown_option("gen", argv[i]);
	}
	if (!out || !have_bytes) {
		errno = 0;
		die("%s", "usage: rcguest gen --seed S --bytes N --out DEV [--chunk C]");
	}
	if (chunk < 8)
		chunk = 8;
	chunk &= ~7ULL; /* whole blocks per write keep the generator simple */

	if (!strcmp(out, "-"))
		fd = 1;
	else if ((fd = open(out, O_WRONLY | O_NOCTTY | O_CREAT, 0644)) < 0)
		die("cannot open %s", out);
	if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && ftruncate(fd, 0) < 0)
		die("cannot truncate %s", out);
	make_raw(fd, out);

	buf = malloc(chunk);
	if (!buf)
		die("%s", "out of memory");
	sha256_init(&sha);
	x = seed ? (uint64_t)seed : 0x9E3779B97F4A7C15ULL;
	while (done < bytes) {
		size_t n = 0, want = bytes - done < chunk ? bytes - done : chunk;
		while (n < want) {
			uint64_t v;
			int b;
			x ^= x >> 12;
			x ^= x << 25;
			x ^= x >> 27;
			v = x * 0x2545F4914F6CDD1DULL;
			for (b = 0; b < 8 && n < want; b++)
				buf[n++] = (uint8_t)(v >> (8 * b));
		}
		sha256_update(&sha, buf, n);
		if (write_all(fd, buf, n) < 0)
			die("write to %s failed", out);
		done += n;
	}
	if (isatty(fd)) {
		/* Wait until the driver has handed everything to the device,
		 * then give the host side a moment before anyone powers off. */
		tcdrain(fd);
		usleep(200000);
	} else {
		fsync(fd); /* EINVAL on pipes; harmless */
	}
	sha256_hex(&sha, hex);
	fprintf(stderr, "%s: wrote %llu bytes to %s sha256=%s\n", prog, done, out, hex);
	if (fd != 1)
		close(fd);
	free(buf);
	return 0;
}

/* ---------- echo ---------- */

int cmd_echo(int argc, char **argv)
{
	const char *dev = NULL;
	unsigned long long count = 0, got = 0;
	int have_count = 0, fd, i, quit = 0;
	static uint8_t line[4 + 4096]; /* "got:" + up to 4096 input bytes */
	size_t len = 0;
	static const char ready[] = "rc-echo-ready\n";

	for (i = 0; i < argc; i++) {
		need_value(argc, argv, i);
		if (!strcmp(argv[i], "--dev"))
			dev = argv[++i];
		else if (!strcmp(argv[i], "--count"))
			count = parse_num("--count", argv[++i]), have_count = 1;
		else
			unknown_option("echo", argv[i]);
	}
	if (!dev || !have_count) {
		errno = 0;
		die("%s", "usage: rcguest echo --dev DEV --count N");
	}
	if (!strcmp(dev, "-"))
		fd = 0;
	else if ((fd = open(dev, O_RDWR | O_NOCTTY)) < 0)
		die("cannot open %s", dev);
	make_raw(fd, dev);
	if (isatty(fd))
		tcflush(fd, TCIFLUSH);
	/* Tell the host the port is open and raw, so it can start sending. */
	if (write_all(fd == 0 ? 1 : fd, (const uint8_t *)ready, sizeof(ready) - 1) < 0)
		die("write to %s failed", dev);
	fprintf(stderr, "%s: echo on %s for %llu bytes, ready\n", prog, dev, count);

	memcpy(line, "got:", 4);
	len = 4;
	while (got < count && !quit) {
		uint8_t c;
		ssize_t r = read(fd, &c, 1);
		if (r < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			die("read from %s failed", dev);
		}
		if (r == 0)
			break;
		got++;
		line[len++] = c;
		if (c == '\n' || len == sizeof(line) || got == count) {
			size_t body = len - 4;
			/* "quit\n" or "quit\r\n" ends the session (after echoing it). */
			if ((body == 5 && !memcmp(line + 4, "quit\n", 5)) ||
			    (body == 6 && !memcmp(line + 4, "quit\r\n", 6)))
				quit = 1;
			if (write_all(fd == 0 ? 1 : fd, line, len) < 0)
				die("write to %s failed", dev);
			len = 4;
		}
	}
	if (isatty(fd)) {
		tcdrain(fd);
		usleep(200000);
	}
	fprintf(stderr, "%s: echo read %llu bytes from %s%s\n", prog, got, dev,
		quit ? " (quit)" : "");
	return 0;
}
