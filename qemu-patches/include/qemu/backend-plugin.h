/*
 * QEMU backend plugin ABI: load a chardev or audiodev backend from a
 * shared library.
 *
 * SPDX-License-Identifier: MIT
 *
 * A backend plugin is a shared object that QEMU opens with
 * g_module_open() when it sees
 *   -chardev plugin,id=ID,path=LIB.so[,opts=K=V:K=V]
 *   -audiodev plugin,id=ID,path=LIB.so[,opts=K=V:K=V]
 * The plugin cannot link against QEMU's symbols, so both directions use
 * function-pointer tables: QEMU hands the plugin a QbpHost (services of
 * QEMU's main loop) and the plugin hands back operation tables
 * (QbpChardevOps, QbpAudioOps).
 *
 * Versioning (modelled on the TCG plugin API): every table starts with a
 * QbpTableHeader. A consumer accepts a table when header.abi_major
 * equals the major it was built for and header.struct_size is at least
 * the size of the fields it will touch. Minor versions only append
 * fields at the end of tables, so a newer plugin works with an older
 * QEMU and the other way round; optional operations may be NULL.
 *
 * Rules for the plugin:
 *  - Every operation is called from QEMU's main loop or a vCPU thread
 *    with the big QEMU lock held. Each must return quickly: no blocking
 *    I/O, no waiting, no sleeping.
 *  - Operations must never unwind or longjmp into QEMU and must never
 *    abort the process on bad input: return an error instead.
 *  - Threads created by the plugin must not call any QbpHost function.
 *  - Strings handed to the plugin are valid only for the duration of
 *    the call.
 *
 * Nothing in this header is specific to one plugin: any project may
 * implement it.
 */
#ifndef QEMU_BACKEND_PLUGIN_H
#define QEMU_BACKEND_PLUGIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define QBP_ABI_MAJOR 1
#define QBP_ABI_MINOR 0

/* Name of the one symbol a plugin exports. */
#define QBP_PLUGIN_QUERY_SYMBOL "qbp_plugin_query"

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

/*
 * Who an instance is: lets a plugin name its devices without extra
 * configuration.
 */
typedef struct QbpInstanceInfo {
    QbpTableHeader header;
    const char *id;      /* the -chardev/-audiodev id, never NULL */
    const char *vm_name; /* -name guest=..., or "" when not given */
    const char *vm_uuid; /* -uuid as 36 characters, or "" when not given */
    const char *opts;    /* the opts= string, or "" */
} QbpInstanceInfo;

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
     * result.
     */
    void (*write)(void *opaque, const uint8_t *buf, size_t len);
} QbpChardevFrontend;

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
     * write_ready()/write_wait_fd() before retrying. A negative value
     * is a hard error (-errno) and the data is lost.
     */
    int (*write)(QbpChardev *chr, const uint8_t *buf, size_t len);
    /*
     * True when write() would accept at least one byte now. When it
     * returns false it has armed a wakeup: write_wait_fd() becomes
     * readable once space may exist, and QEMU calls write_ready() again
     * then. It never returns true spuriously.
     */
    bool (*write_ready)(QbpChardev *chr);
    /* The fd QEMU polls for readability while write_ready() is false. */
    int (*write_wait_fd)(QbpChardev *chr);
    /* The frontend can take input again (qemu_chr_fe_accept_input). */
    void (*accept_input)(QbpChardev *chr);
    /* The frontend opened (1) or closed (0) the device. May be NULL. */
    void (*set_fe_open)(QbpChardev *chr, int fe_open);
} QbpChardevOps;

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
     * consume everything it is given: it returns len, or the bytes it
     * took before an error. A plugin that cannot keep the data drops it
     * and counts it; it never pushes back on the guest.
     */
    size_t (*out_write)(QbpAudio *audio, const void *buf, size_t len);
    /* Input voice: optional (all NULL when the plugin has no capture). */
    int (*in_open)(QbpAudio *audio, const QbpAudioFormat *format);
    void (*in_close)(QbpAudio *audio);
    void (*in_enable)(QbpAudio *audio, bool enable);
    /*
     * Fill buf with up to len bytes of captured audio (silence when
     * none). Returns bytes.
     */
    size_t (*in_read)(QbpAudio *audio, void *buf, size_t len);
} QbpAudioOps;

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

/*
 * The one symbol a plugin exports. QEMU calls it once per library with
 * its host table; host stays valid for the life of the process. Returns
 * the plugin's tables (static storage) or NULL when the plugin cannot
 * work with this host (it logs why through host). A library whose
 * qbp_plugin_query() has been called is never unloaded.
 */
typedef const QbpPluginInfo *(*QbpPluginQueryFn)(const QbpHost *host);

#endif /* QEMU_BACKEND_PLUGIN_H */
