/* tone and record: a sine played, and a capture measured, through OSS (/dev/dsp). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include <linux/soundcard.h>

#include "rcguest.h"

/*
 * Sets an open OSS device to stereo S16_LE at `rate` (or what the driver makes of it);
 * returns the driver's rate. Dies when the driver refuses.
 */
static int dsp_s16_stereo(int fd, const char *dev, unsigned long long rate)
{
	int fmt = AFMT_S16_LE, ch = 2, spd;

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
	return spd;
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

int cmd_tone(int argc, char **argv)
{
	unsigned long long freq = 440, ms = 1000, rate = 48000, volume = 101;
	const char *dev = "/dev/dsp";
	int fd, i, spd;
	unsigned long long frames, f;
	int16_t buf[2 * 1024];
	double t0, phase = 0, step;

	for (i = 0; i < argc; i++) {
		need_value(argc, argv, i);
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
			unknown_option("tone", argv[i]);
		}
	}
	if ((fd = open(dev, O_WRONLY)) < 0)
		die("cannot open %s", dev);
	spd = dsp_s16_stereo(fd, dev, rate);

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

int cmd_record(int argc, char **argv)
{
	unsigned long long ms = 1000, rate = 48000, volume = 100;
	unsigned long long frames, f = 0, first = 0, last = 0, active = 0, rises = 0;
	const char *dev = "/dev/dsp";
	int fd, i, spd, peak = 0, prev = 0;
	int16_t buf[2 * 1024];
	double t0;

	for (i = 0; i < argc; i++) {
		need_value(argc, argv, i);
		if (!strcmp(argv[i], "--ms"))
			ms = parse_num("--ms", argv[++i]);
		else if (!strcmp(argv[i], "--rate"))
			rate = parse_num("--rate", argv[++i]);
		else if (!strcmp(argv[i], "--dev"))
			dev = argv[++i];
		else if (!strcmp(argv[i], "--volume"))
			volume = parse_num("--volume", argv[++i]);
		else
			unknown_option("record", argv[i]);
	}
	if ((fd = open(dev, O_RDONLY)) < 0)
		die("cannot open %s for recording", dev);
	spd = dsp_s16_stereo(fd, dev, rate);
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
