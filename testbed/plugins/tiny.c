/*
 * A tiny backend plugin for QEMU's backend plugin ABI (qemu/backend-plugin.h), used by
 * the real-QEMU tests to check what ringcast's own plugin cannot show: an audio backend
 * without capture, and tables of other ABI versions.
 *
 * Its console appends everything the guest writes to the file named by config= (or
 * discards it when config is empty) and never pushes back; its audio output takes every
 * period and has no capture.
 *
 * TINY_ABI selects the tables it exports:
 *   10   built for ABI 1.0: QbpChardevOps ends before `flags`
 *   11   built for ABI 1.1, the header's own version
 *   12   built for a future 1.2 that appends a member to QbpChardevOps and to QbpHost;
 *        it reads the host table with the min(struct_size, sizeof) rule and logs
 *        whether the 1.2 host member is present
 *   9    a broken table: QbpChardevOps smaller than its 1.0 size
 *   20   ABI major 2
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "qemu/backend-plugin.h"

#ifndef TINY_ABI
#define TINY_ABI 11
#endif

/* QbpHost and QbpChardevOps as a 1.2 plugin would know them */
typedef struct TinyHost {
    QbpHost v1;
    void (*future_op)(void);
} TinyHost;

typedef struct TinyChardevOps {
    QbpChardevOps v1;
    uint64_t future_member;
} TinyChardevOps;

static TinyHost host;

static void say(QbpLogLevel level, const char *msg)
{
    if (host.v1.log) {
        host.v1.log(level, msg);
    }
}

struct QbpChardev {
    int fd;
};

static QbpChardev *chr_open(const QbpInstanceInfo *info, const QbpChardevFrontend *fe,
                            char *err, size_t err_len)
{
    QbpChardev *c = calloc(1, sizeof(*c));

    (void)fe;
    if (!c) {
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    c->fd = -1;
    if (info->config && info->config[0]) {
        c->fd = open(info->config, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
        if (c->fd < 0) {
            snprintf(err, err_len, "%s: %s", info->config, strerror(errno));
            free(c);
            return NULL;
        }
    }
    return c;
}

static void chr_close(QbpChardev *c)
{
    if (c->fd >= 0) {
        close(c->fd);
    }
    free(c);
}

static int chr_write(QbpChardev *c, const uint8_t *buf, size_t len)
{
    size_t done = 0;

    while (c->fd >= 0 && done < len) {
        ssize_t n = write(c->fd, buf + done, len - done);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return -EIO;
        }
        done += n;
    }
    return len > 0x7fffffff ? 0x7fffffff : (int)len;
}

static bool chr_write_ready(QbpChardev *c)
{
    (void)c;
    return true;
}

static int chr_write_wait_fd(QbpChardev *c)
{
    (void)c;
    return -1;
}

static void chr_accept_input(QbpChardev *c)
{
    (void)c;
}

struct QbpAudio {
    int unused;
};

static QbpAudio *audio_open(const QbpInstanceInfo *info, char *err, size_t err_len)
{
    (void)info;
    (void)err;
    (void)err_len;
    return calloc(1, sizeof(QbpAudio));
}

static void audio_close(QbpAudio *a)
{
    free(a);
}

static int out_open(QbpAudio *a, const QbpAudioFormat *f)
{
    (void)a;
    (void)f;
    return 0;
}

static void out_close(QbpAudio *a)
{
    (void)a;
}

static void out_enable(QbpAudio *a, bool on)
{
    (void)a;
    (void)on;
}

static size_t out_write(QbpAudio *a, const void *buf, size_t len)
{
    (void)a;
    (void)buf;
    return len;
}

static TinyChardevOps chardev_ops = {
    .v1 = {
        .open = chr_open,
        .close = chr_close,
        .write = chr_write,
        .write_ready = chr_write_ready,
        .write_wait_fd = chr_write_wait_fd,
        .accept_input = chr_accept_input,
    },
};

static QbpAudioOps audio_ops = {
    .header = { QBP_ABI_MAJOR, QBP_ABI_MINOR, sizeof(QbpAudioOps) },
    .open = audio_open,
    .close = audio_close,
    .out_open = out_open,
    .out_close = out_close,
    .out_enable = out_enable,
    .out_write = out_write,
};

static QbpPluginInfo plugin_info = {
    .header = { QBP_ABI_MAJOR, QBP_ABI_MINOR, sizeof(QbpPluginInfo) },
    .name = "tiny",
    .chardev = &chardev_ops.v1,
    .audio = &audio_ops,
};

__attribute__((visibility("default")))
const QbpPluginInfo *qbp_plugin_query(const QbpHost *h)
{
    char msg[160];
    size_t n;

    if (!h || h->header.abi_major != QBP_ABI_MAJOR ||
        h->header.struct_size < QBP_HOST_SIZE_1_0) {
        return NULL;
    }
    /* members beyond the host's struct_size are absent */
    n = h->header.struct_size < sizeof(host) ? h->header.struct_size : sizeof(host);
    memset(&host, 0, sizeof(host));
    memcpy(&host, h, n);

    chardev_ops.v1.header.abi_major = QBP_ABI_MAJOR;
    switch (TINY_ABI) {
    case 10:
        chardev_ops.v1.header.abi_minor = 0;
        chardev_ops.v1.header.struct_size = QBP_CHARDEV_OPS_SIZE_1_0;
        break;
    case 12:
        chardev_ops.v1.header.abi_minor = 2;
        chardev_ops.v1.header.struct_size = sizeof(TinyChardevOps);
        chardev_ops.future_member = 0xdeadbeef;
        break;
    case 9:
        chardev_ops.v1.header.struct_size = QBP_CHARDEV_OPS_SIZE_1_0 - 8;
        break;
    case 20:
        chardev_ops.v1.header.abi_major = 2;
        chardev_ops.v1.header.struct_size = sizeof(QbpChardevOps);
        break;
    default:
        chardev_ops.v1.header.abi_minor = QBP_ABI_MINOR;
        chardev_ops.v1.header.struct_size = sizeof(QbpChardevOps);
        break;
    }
    snprintf(msg, sizeof(msg),
             "tiny plugin: ABI variant %d, host ABI %u.%u, host table %u bytes, "
             "1.2 host member %s",
             TINY_ABI, h->header.abi_major, h->header.abi_minor, h->header.struct_size,
             host.future_op ? "present" : "absent");
    say(QBP_LOG_INFO, msg);
    return &plugin_info;
}
