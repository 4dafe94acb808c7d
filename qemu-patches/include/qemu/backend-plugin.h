/*
 * QEMU backend plugin ABI: load a chardev or audiodev backend from a
 * shared library.
 *
 * Copyright (c) 2026 ringcast developers
 *
 * License: GNU GPL, version 2 or later.
 *   See the COPYING file in the top-level directory.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * This interface is not a stable QEMU API.  It is versioned so that
 * QEMU and a plugin detect a mismatch instead of crashing, but a QEMU
 * release may change it incompatibly by raising QBP_ABI_MAJOR.
 *
 * A backend plugin is a shared object that QEMU opens with
 * g_module_open() when it sees
 *   -chardev plugin,id=ID,path=/ABSOLUTE/LIB.so[,config=STRING]
 *   -audiodev plugin,id=ID,path=/ABSOLUTE/LIB.so[,config=STRING]
 * The plugin cannot link against QEMU's symbols, so both directions use
 * function-pointer tables: QEMU hands the plugin a QbpHost (services of
 * QEMU's main loop) and the plugin hands back operation tables
 * (QbpChardevOps, QbpAudioOps).  Loading a plugin runs its code with
 * QEMU's privileges, so QEMU only accepts an absolute path to a regular
 * file and only while the machine is being created (from the command
 * line), never from chardev-add or chardev-change on a running machine.
 *
 * Versioning: every table starts with a QbpTableHeader.  Minor versions
 * only append members at the end of tables; every table has a frozen
 * size per minor version (QBP_*_SIZE_1_0, ...), the offset just past its
 * last member of that version.  A side accepts a table when
 * header.abi_major equals its own major and header.struct_size is at
 * least the table's 1.0 size.  It copies min(struct_size, sizeof) bytes
 * into a zeroed local copy and uses only that copy: members beyond
 * struct_size are absent (zero, i.e. NULL or no flags).  So a plugin
 * built for 1.0 works in a QEMU that knows 1.1 and the other way round.
 * Optional operations may be NULL.
 *
 * Threads and locks:
 *  - QbpChardevOps.write is called with the chardev's write lock held
 *    (chr_write_lock), not necessarily with the big QEMU lock (BQL): a
 *    monitor in an I/O thread may write.  Calls of write are serialised
 *    with each other, but may run concurrently with the other operations
 *    of the same instance, which need the same care.
 *  - Every other operation, and every QbpHost callback (fd watches and
 *    timers), runs in QEMU's main loop or a vCPU thread with the BQL
 *    held.
 *  - Operations may be re-entered: QbpChardevFrontend.write hands the
 *    data to the emulated device, which may call accept_input or write
 *    of the same instance before it returns.
 *  - Every operation must return quickly: no blocking I/O, no waiting,
 *    no sleeping.  It must never unwind or longjmp into QEMU and never
 *    abort the process on bad input: it returns an error instead.
 *  - Threads created by the plugin must not call any QbpHost function;
 *    they wake QEMU by making a watched fd readable.
 *  - Strings handed to the plugin are valid only for the duration of
 *    the call.
 */
#ifndef QEMU_BACKEND_PLUGIN_H
#define QEMU_BACKEND_PLUGIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define QBP_ABI_MAJOR 1
#define QBP_ABI_MINOR 1

/* Name of the one symbol a plugin exports. */
#define QBP_PLUGIN_QUERY_SYMBOL "qbp_plugin_query"

/* The offset just past member of type: a table's size up to member. */
#define QBP_SIZE_THROUGH(type, member) \
    (offsetof(type, member) + sizeof(((type *)0)->member))

/* Common first member of every table, in both directions. */
typedef struct QbpTableHeader {
    uint16_t abi_major;   /* QBP_ABI_MAJOR of the side that filled it */
    uint16_t abi_minor;   /* QBP_ABI_MINOR of the side that filled it */
    uint32_t struct_size; /* sizeof the table as that side knows it */
} QbpTableHeader;

/* Log levels for QbpHost.log. */
typedef enum QbpLogLevel {
    QBP_LOG_ERROR = 0,
    QBP_LOG_WARNING = 1,
    QBP_LOG_INFO = 2,
    QBP_LOG_DEBUG = 3,
} QbpLogLevel;

/* Clocks for QbpHost.clock_ns and timers. */
typedef enum QbpClock {
    /* CLOCK_MONOTONIC of the host, never stops */
    QBP_CLOCK_HOST_MONOTONIC = 0,
    /* guest virtual time, stops while the VM is paused */
    QBP_CLOCK_VIRTUAL = 1,
} QbpClock;

/* Poll events for fd watches (same values as poll(2)). */
#define QBP_EVENT_IN 0x001u
#define QBP_EVENT_OUT 0x004u
#define QBP_EVENT_ERR 0x008u
#define QBP_EVENT_HUP 0x010u

typedef struct QbpFdWatch QbpFdWatch; /* opaque, owned by QEMU */
typedef struct QbpTimer QbpTimer;     /* opaque, owned by QEMU */

typedef void (*QbpFdCallback)(void *opaque, int fd, uint32_t revents);
typedef void (*QbpTimerCallback)(void *opaque);

/*
 * Services of QEMU's main loop. Valid from qbp_plugin_query() until the
 * process exits. All callbacks run in QEMU's main thread with the big
 * QEMU lock held.
 */
typedef struct QbpHost {
    QbpTableHeader header;
    /* Write one line (no trailing newline needed) to QEMU's log. */
    void (*log)(QbpLogLevel level, const char *message);
    /* Current time of the given clock in nanoseconds. */
    uint64_t (*clock_ns)(QbpClock clock);
    /*
     * Call cb whenever fd has any of the events (level triggered) until
     * removed. QBP_EVENT_ERR and QBP_EVENT_HUP are always reported, as
     * with poll(2). Returns NULL on failure.
     */
    QbpFdWatch *(*fd_watch_add)(int fd, uint32_t events, QbpFdCallback cb,
                                void *opaque);
    /*
     * Remove a watch; its callback is not called afterwards. Safe inside
     * the callback.
     */
    void (*fd_watch_remove)(QbpFdWatch *watch);
    /* Create an unarmed one-shot timer on clock. Returns NULL on failure. */
    QbpTimer *(*timer_new)(QbpClock clock, QbpTimerCallback cb,
                           void *opaque);
    /*
     * Arm (or re-arm) the timer to fire once at the absolute time
     * expire_ns of its clock.
     */
    void (*timer_mod)(QbpTimer *timer, uint64_t expire_ns);
    /* Disarm and free the timer. Safe inside its callback. */
    void (*timer_free)(QbpTimer *timer);
} QbpHost;

#define QBP_HOST_SIZE_1_0 QBP_SIZE_THROUGH(QbpHost, timer_free)

/*
 * Who an instance is: lets a plugin name its devices without extra
 * configuration.
 */
typedef struct QbpInstanceInfo {
    QbpTableHeader header;
    const char *id;      /* the -chardev/-audiodev id, never NULL */
    const char *vm_name; /* -name guest=..., or "" when not given */
    const char *vm_uuid; /* -uuid as 36 characters, or "" when not given */
    const char *config;  /* the config= string, or "" */
} QbpInstanceInfo;

#define QBP_INSTANCE_INFO_SIZE_1_0 QBP_SIZE_THROUGH(QbpInstanceInfo, config)

/* ---- character devices --------------------------------------------- */

typedef struct QbpChardev QbpChardev; /* opaque, owned by the plugin */

/* The frontend (the emulated UART, virtio console, ...) for the plugin. */
typedef struct QbpChardevFrontend {
    QbpTableHeader header;
    void *opaque;
    /* How many bytes the frontend can take now (qemu_chr_be_can_write). */
    size_t (*can_write)(void *opaque);
    /*
     * Hand bytes to the guest. len must not exceed the last can_write()
     * result.  The device may call back into the plugin (accept_input,
     * write) before this returns.
     */
    void (*write)(void *opaque, const uint8_t *buf, size_t len);
} QbpChardevFrontend;

#define QBP_CHARDEV_FRONTEND_SIZE_1_0 \
    QBP_SIZE_THROUGH(QbpChardevFrontend, write)

/*
 * QbpChardevOps.flags (since 1.1).
 *
 * QBP_CHARDEV_FLAG_FLOW_CONTROL: the plugin reports a short write only
 * while it is certain to make room again soon without help from the
 * guest (for example, it stops applying backpressure and overwrites old
 * data when its consumer goes away).  Only then does QEMU let a device
 * that cannot otherwise wait, such as virtconsole, stall the guest until
 * there is room; without the flag such a device drops what does not fit.
 */
#define QBP_CHARDEV_FLAG_FLOW_CONTROL (1ull << 0)

typedef struct QbpChardevOps {
    QbpTableHeader header;
    /*
     * Create an instance. frontend stays valid until close(). On failure
     * return NULL and put a human-readable reason into err (err_len
     * bytes, NUL-terminated).
     */
    QbpChardev *(*open)(const QbpInstanceInfo *info,
                        const QbpChardevFrontend *frontend,
                        char *err, size_t err_len);
    void (*close)(QbpChardev *chr);
    /*
     * Output from the guest. Returns the number of bytes accepted
     * (0..len). A short count means "full": QEMU then waits with
     * write_ready()/write_wait_fd() before retrying (callers that must
     * write everything at once retry after a short sleep).  A negative
     * value is a hard error (-errno) and the data is lost.
     */
    int (*write)(QbpChardev *chr, const uint8_t *buf, size_t len);
    /*
     * True when write() would accept at least one byte now. When it
     * returns false it has armed a wakeup: write_wait_fd() becomes
     * readable once space may exist, and QEMU calls write_ready() again
     * then. It never returns true spuriously, and it leaves the fd
     * drained while there is no room, so that the main loop does not
     * spin.
     */
    bool (*write_ready)(QbpChardev *chr);
    /*
     * The fd QEMU polls for readability while write_ready() is false,
     * or -1 when the instance cannot wake QEMU (QEMU then treats it as
     * unable to wait).  It must be the same fd for the whole life of
     * the instance: QEMU may keep polling it.
     */
    int (*write_wait_fd)(QbpChardev *chr);
    /*
     * The frontend can take input again (qemu_chr_fe_accept_input), or
     * its handlers changed (after realize, stop/cont, migration): the
     * plugin hands pending input over, up to can_write().
     */
    void (*accept_input)(QbpChardev *chr);
    /* The frontend opened (1) or closed (0) the device. May be NULL. */
    void (*set_fe_open)(QbpChardev *chr, int fe_open);
    /* since 1.1: QBP_CHARDEV_FLAG_* */
    uint64_t flags;
} QbpChardevOps;

#define QBP_CHARDEV_OPS_SIZE_1_0 QBP_SIZE_THROUGH(QbpChardevOps, set_fe_open)
#define QBP_CHARDEV_OPS_SIZE_1_1 QBP_SIZE_THROUGH(QbpChardevOps, flags)

/* ---- audio --------------------------------------------------------- */

/* opaque, owned by the plugin: one per -audiodev */
typedef struct QbpAudio QbpAudio;

/* Sample formats, in QEMU's AudioFormat order. */
typedef enum QbpSampleFormat {
    QBP_FMT_U8 = 0,
    QBP_FMT_S8 = 1,
    QBP_FMT_U16 = 2,
    QBP_FMT_S16 = 3,
    QBP_FMT_U32 = 4,
    QBP_FMT_S32 = 5,
    QBP_FMT_F32 = 6,
} QbpSampleFormat;

typedef struct QbpAudioFormat {
    uint32_t frequency;     /* frames per second */
    uint16_t channels;      /* interleaved */
    uint16_t sample_format; /* QbpSampleFormat */
    uint8_t big_endian;     /* 0: little endian */
    uint8_t reserved[7];
} QbpAudioFormat;

typedef struct QbpAudioOps {
    QbpTableHeader header;
    /* Create the instance for one -audiodev. NULL + err on failure. */
    QbpAudio *(*open)(const QbpInstanceInfo *info, char *err,
                      size_t err_len);
    void (*close)(QbpAudio *audio);
    /*
     * Output voice: format is fixed for the voice's lifetime. Returns 0
     * or -errno.
     */
    int (*out_open)(QbpAudio *audio, const QbpAudioFormat *format);
    void (*out_close)(QbpAudio *audio);
    void (*out_enable)(QbpAudio *audio, bool enable);
    /*
     * One period of output. QEMU paces calls in real time (it hands over
     * what the elapsed virtual time is worth) and the plugin must
     * consume everything it is given: it returns len.  A plugin that
     * cannot keep the data drops it and counts it; it never pushes back
     * on the guest.  QEMU reports a plugin that returns less.
     */
    size_t (*out_write)(QbpAudio *audio, const void *buf, size_t len);
    /*
     * Input voice: optional (all NULL when the plugin has no capture;
     * the guest then records silence).
     */
    int (*in_open)(QbpAudio *audio, const QbpAudioFormat *format);
    void (*in_close)(QbpAudio *audio);
    void (*in_enable)(QbpAudio *audio, bool enable);
    /*
     * Fill buf with up to len bytes of captured audio (silence when
     * none). Returns bytes.
     */
    size_t (*in_read)(QbpAudio *audio, void *buf, size_t len);
} QbpAudioOps;

#define QBP_AUDIO_OPS_SIZE_1_0 QBP_SIZE_THROUGH(QbpAudioOps, in_read)

/* ---- the exported entry point -------------------------------------- */

typedef struct QbpPluginInfo {
    QbpTableHeader header;
    /* plugin name for messages, static storage */
    const char *name;
    /* NULL: the plugin has no character devices */
    const QbpChardevOps *chardev;
    /* NULL: the plugin has no audio */
    const QbpAudioOps *audio;
} QbpPluginInfo;

#define QBP_PLUGIN_INFO_SIZE_1_0 QBP_SIZE_THROUGH(QbpPluginInfo, audio)

/*
 * The one symbol a plugin exports. QEMU calls it once per library with
 * its host table; host stays valid for the life of the process. Returns
 * the plugin's tables (static storage) or NULL when the plugin cannot
 * work with this host (it logs why through host). A library whose
 * qbp_plugin_query() has been called is never unloaded.
 */
typedef const QbpPluginInfo *(*QbpPluginQueryFn)(const QbpHost *host);

#endif /* QEMU_BACKEND_PLUGIN_H */
