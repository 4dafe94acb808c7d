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
#include <fcntl.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>
#include <linux/soundcard.h>

/* ---------- SHA-256 (FIPS 180-4), self-contained ---------- */

struct sha256 {
	uint32_t h[8];
	uint64_t len;
	uint8_t buf[64];
	size_t used;
};

static const uint32_t sha_k[64] = {
	0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
	0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
	0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
	0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
	0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
	0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
	0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
	0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

#define ROR32(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void sha256_block(struct sha256 *s, const uint8_t *p)
{
	uint32_t w[64], a, b, c, d, e, f, g, h;
	int i;

	for (i = 0; i < 16; i++)
		w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
		       (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
	for (i = 16; i < 64; i++) {
		uint32_t s0 = ROR32(w[i - 15], 7) ^ ROR32(w[i - 15], 18) ^ (w[i - 15] >> 3);
		uint32_t s1 = ROR32(w[i - 2], 17) ^ ROR32(w[i - 2], 19) ^ (w[i - 2] >> 10);
		w[i] = w[i - 16] + s0 + w[i - 7] + s1;
	}
	a = s->h[0]; b = s->h[1]; c = s->h[2]; d = s->h[3];
	e = s->h[4]; f = s->h[5]; g = s->h[6]; h = s->h[7];
	for (i = 0; i < 64; i++) {
		uint32_t t1 = h + (ROR32(e, 6) ^ ROR32(e, 11) ^ ROR32(e, 25)) +
			      ((e & f) ^ (~e & g)) + sha_k[i] + w[i];
		uint32_t t2 = (ROR32(a, 2) ^ ROR32(a, 13) ^ ROR32(a, 22)) +
			      ((a & b) ^ (a & c) ^ (b & c));
		h = g; g = f; f = e; e = d + t1;
		d = c; c = b; b = a; a = t1 + t2;
	}
	s->h[0] += a; s->h[1] += b; s->h[2] += c; s->h[3] += d;
	s->h[4] += e; s->h[5] += f; s->h[6] += g; s->h[7] += h;
}

static void sha256_init(struct sha256 *s)
{
	static const uint32_t iv[8] = {
		0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
		0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
	};
	memcpy(s->h, iv, sizeof(iv));
	s->len = 0;
	s->used = 0;
}

static void sha256_update(struct sha256 *s, const uint8_t *p, size_t n)
{
	s->len += n;
	while (n > 0) {
		size_t take = 64 - s->used;
		if (take > n)
			take = n;
		memcpy(s->buf + s->used, p, take);
		s->used += take;
		p += take;
		n -= take;
		if (s->used == 64) {
			sha256_block(s, s->buf);
			s->used = 0;
		}
	}
}

static void sha256_hex(struct sha256 *s, char out[65])
{
	uint64_t bits = s->len * 8;
	uint8_t pad = 0x80, zero = 0, lenbe[8];
	int i;

	sha256_update(s, &pad, 1);
	while (s->used != 56)
		sha256_update(s, &zero, 1);
	for (i = 0; i < 8; i++)
		lenbe[i] = (uint8_t)(bits >> (56 - 8 * i));
	sha256_update(s, lenbe, 8);
	for (i = 0; i < 8; i++)
		sprintf(out + 8 * i, "%08x", s->h[i]);
	out[64] = 0;
}

/* ---------- helpers ---------- */

static const char *prog = "rcguest";

static void die(const char *fmt, const char *arg)
{
	fprintf(stderr, "%s: ", prog);
	fprintf(stderr, fmt, arg);
	if (errno)
		fprintf(stderr, ": %s", strerror(errno));
	fputc('\n', stderr);
	exit(1);
}

static unsigned long long parse_num(const char *opt, const char *s)
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

static int write_all(int fd, const uint8_t *p, size_t n)
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
static void make_raw(int fd, const char *dev)
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

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* ---------- gen ---------- */

static int cmd_gen(int argc, char **argv)
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
		if (i + 1 >= argc) {
			errno = 0;
			die("missing value for %s", argv[i]);
		}
		if (!strcmp(argv[i], "--seed"))
			seed = parse_num("--seed", argv[++i]);
		else if (!strcmp(argv[i], "--bytes"))
			bytes = parse_num("--bytes", argv[++i]), have_bytes = 1;
		else if (!strcmp(argv[i], "--out"))
			out = argv[++i];
		else if (!strcmp(argv[i], "--chunk"))
			chunk = parse_num("--chunk", argv[++i]);
		else {
			errno = 0;
			die("gen: unknown option %s", argv[i]);
		}
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

/* ---------- tone ---------- */

/*
 * Sets the OSS mixer's master and PCM volume (0 mutes, 100 is full), as a
 * guest's mixer settings would be restored at boot: drivers start muted.
 * A card without one of the two controls is fine; without both it fails.
 */
static void set_volume(unsigned long long pct)
{
	const char *mixer = "/dev/mixer";
	int fd, v, ok = 0;

	if ((fd = open(mixer, O_RDWR)) < 0)
		die("cannot open %s to set the volume", mixer);
	v = (int)(pct | pct << 8);
	if (ioctl(fd, SOUND_MIXER_WRITE_VOLUME, &v) == 0)
		ok++;
	v = (int)(pct | pct << 8);
	if (ioctl(fd, SOUND_MIXER_WRITE_PCM, &v) == 0)
		ok++;
	if (!ok)
		die("%s has neither a master nor a PCM volume", mixer);
	fprintf(stderr, "%s: volume %llu%% on %s (%d of 2 controls)\n", prog, pct,
		mixer, ok);
	close(fd);
}

static int cmd_tone(int argc, char **argv)
{
	unsigned long long freq = 440, ms = 1000, rate = 48000, volume = 101;
	const char *dev = "/dev/dsp";
	int fd, i, fmt = AFMT_S16_LE, ch = 2, spd;
	unsigned long long frames, f;
	int16_t buf[2 * 1024];
	double t0, phase = 0, step;

	for (i = 0; i < argc; i++) {
		if (i + 1 >= argc) {
			errno = 0;
			die("missing value for %s", argv[i]);
		}
		if (!strcmp(argv[i], "--freq"))
			freq = parse_num("--freq", argv[++i]);
		else if (!strcmp(argv[i], "--ms"))
			ms = parse_num("--ms", argv[++i]);
		else if (!strcmp(argv[i], "--rate"))
			rate = parse_num("--rate", argv[++i]);
		else if (!strcmp(argv[i], "--dev"))
			dev = argv[++i];
		else if (!strcmp(argv[i], "--volume")) {
			volume = parse_num("--volume", argv[++i]);
			if (volume > 100) {
				errno = 0;
				die("%s takes 0 to 100", "--volume");
			}
		} else {
			errno = 0;
			die("tone: unknown option %s", argv[i]);
		}
	}
	if ((fd = open(dev, O_WRONLY)) < 0)
		die("cannot open %s", dev);
	if (ioctl(fd, SNDCTL_DSP_SETFMT, &fmt) < 0)
		die("SNDCTL_DSP_SETFMT on %s", dev);
	if (fmt != AFMT_S16_LE) {
		errno = 0;
		die("%s refused S16_LE", dev);
	}
	if (ioctl(fd, SNDCTL_DSP_CHANNELS, &ch) < 0)
		die("SNDCTL_DSP_CHANNELS on %s", dev);
	if (ch != 2) {
		errno = 0;
		die("%s refused 2 channels", dev);
	}
	spd = (int)rate;
	if (ioctl(fd, SNDCTL_DSP_SPEED, &spd) < 0)
		die("SNDCTL_DSP_SPEED on %s", dev);
	if (spd <= 0) {
		errno = 0;
		die("%s gave no usable rate", dev);
	}

	if (volume <= 100) {
		/*
		 * Some cards (QEMU's AC97) reset the volume when the driver
		 * opens the voice, which happens at the first write: play a
		 * little silence first, then set the volume for the tone.
		 */
		memset(buf, 0, sizeof(buf));
		if (write_all(fd, (const uint8_t *)buf, sizeof(buf)) < 0)
			die("write to %s failed", dev);
		set_volume(volume);
	}
	t0 = now_s();
	frames = (unsigned long long)spd * ms / 1000;
	step = 2.0 * M_PI * (double)freq / (double)spd;
	for (f = 0; f < frames;) {
		size_t n = 0;
		while (n < 1024 && f < frames) {
			int16_t s = (int16_t)lrint(16383.0 * sin(phase));
			buf[2 * n] = s;
			buf[2 * n + 1] = s;
			phase += step;
			if (phase >= 2.0 * M_PI)
				phase -= 2.0 * M_PI;
			n++;
			f++;
		}
		if (write_all(fd, (const uint8_t *)buf, n * 4) < 0)
			die("write to %s failed", dev);
	}
	if (ioctl(fd, SNDCTL_DSP_SYNC, 0) < 0)
		die("SNDCTL_DSP_SYNC on %s", dev);
	fprintf(stderr, "%s: tone %llu Hz %llu ms on %s: asked %llu Hz, driver set %d Hz, "
		"%llu frames s16le stereo, took %.3f s\n",
		prog, freq, ms, dev, rate, spd, frames, now_s() - t0);
	close(fd);
	return 0;
}

/* ---------- record ---------- */

/*
 * Selects line-in as the recording source and sets the capture gain: drivers
 * start with capture muted (QEMU's AC97 resets its record gain to mute). A
 * card without a record source control is fine; without a gain it fails.
 */
static void set_capture(unsigned long long pct)
{
	const char *mixer = "/dev/mixer";
	int fd, v;

	if ((fd = open(mixer, O_RDWR)) < 0)
		die("cannot open %s to set the capture gain", mixer);
	v = SOUND_MASK_LINE;
	if (ioctl(fd, SOUND_MIXER_WRITE_RECSRC, &v) < 0)
		fprintf(stderr, "%s: %s has no record source control\n", prog, mixer);
	v = (int)(pct | pct << 8);
	if (ioctl(fd, SOUND_MIXER_WRITE_IGAIN, &v) < 0)
		die("%s has no capture gain", mixer);
	close(fd);
}

static int cmd_record(int argc, char **argv)
{
	unsigned long long ms = 1000, rate = 48000, volume = 100;
	unsigned long long frames, f = 0, first = 0, last = 0, active = 0, rises = 0;
	const char *dev = "/dev/dsp";
	int fd, i, fmt = AFMT_S16_LE, ch = 2, spd, peak = 0, prev = 0;
	int16_t buf[2 * 1024];
	double t0;

	for (i = 0; i < argc; i++) {
		if (i + 1 >= argc) {
			errno = 0;
			die("missing value for %s", argv[i]);
		}
		if (!strcmp(argv[i], "--ms"))
			ms = parse_num("--ms", argv[++i]);
		else if (!strcmp(argv[i], "--rate"))
			rate = parse_num("--rate", argv[++i]);
		else if (!strcmp(argv[i], "--dev"))
			dev = argv[++i];
		else if (!strcmp(argv[i], "--volume"))
			volume = parse_num("--volume", argv[++i]);
		else {
			errno = 0;
			die("record: unknown option %s", argv[i]);
		}
	}
	if ((fd = open(dev, O_RDONLY)) < 0)
		die("cannot open %s for recording", dev);
	if (ioctl(fd, SNDCTL_DSP_SETFMT, &fmt) < 0 || fmt != AFMT_S16_LE)
		die("%s refused S16_LE", dev);
	if (ioctl(fd, SNDCTL_DSP_CHANNELS, &ch) < 0 || ch != 2)
		die("%s refused 2 channels", dev);
	spd = (int)rate;
	if (ioctl(fd, SNDCTL_DSP_SPEED, &spd) < 0 || spd <= 0)
		die("%s gave no usable rate", dev);
	set_capture(volume > 100 ? 100 : volume);
	t0 = now_s();
	frames = (unsigned long long)spd * ms / 1000;
	while (f < frames) {
		size_t want = frames - f < 1024 ? frames - f : 1024, n, k;
		ssize_t got = read(fd, buf, want * 4);

		if (got < 0 && errno == EINTR)
			continue;
		if (got <= 0)
			die("read from %s failed", dev);
		n = (size_t)got / 4;
		for (k = 0; k < n; k++, f++) {
			int s = buf[2 * k], a = s < 0 ? -s : s;

			if (a > peak)
				peak = a;
			if (a > 1024) {
				if (!active)
					first = f;
				last = f;
				active++;
			}
			if (active && prev < 0 && s >= 0)
				rises++;
			prev = s;
		}
	}
	fprintf(stderr, "%s: record %llu ms on %s: driver set %d Hz, %llu frames, "
		"active %llu frames, rises %llu, frequency %.1f Hz, peak %d, took %.3f s\n",
		prog, ms, dev, spd, frames, active, rises,
		last > first ? (double)rises * spd / (double)(last - first) : 0.0,
		peak, now_s() - t0);
	close(fd);
	return 0;
}

/* ---------- echo ---------- */

static int cmd_echo(int argc, char **argv)
{
	const char *dev = NULL;
	unsigned long long count = 0, got = 0;
	int have_count = 0, fd, i, quit = 0;
	static uint8_t line[4 + 4096]; /* "got:" + up to 4096 input bytes */
	size_t len = 0;
	static const char ready[] = "rc-echo-ready\n";

	for (i = 0; i < argc; i++) {
		if (i + 1 >= argc) {
			errno = 0;
			die("missing value for %s", argv[i]);
		}
		if (!strcmp(argv[i], "--dev"))
			dev = argv[++i];
		else if (!strcmp(argv[i], "--count"))
			count = parse_num("--count", argv[++i]), have_count = 1;
		else {
			errno = 0;
			die("echo: unknown option %s", argv[i]);
		}
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
