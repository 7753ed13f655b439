/* layout.h — every structure memipc places in shared memory.
 *
 * These bytes are read by processes built from other versions of memipc, and
 * written by processes that may be buggy or hostile.  So:
 *   - every field has a fixed offset and size, listed in a table beside the
 *     struct and checked by _Static_assert below;
 *   - MI_ABI_VERSION is derived from the layout itself (as LMDB derives
 *     MDB_LOCK_FORMAT), so builds whose layouts differ refuse to share;
 *   - MI_MAGIC is chosen so that a reader of the other byte order sees a
 *     different number and can say so;
 *   - readers validate every field before use (the Python mirror is
 *     src/memipc/_layout.py; tests/test_layout.py checks it against OFFSETS).
 *
 * All integers are little-endian on every platform memipc supports today and
 * naturally aligned, so the atomics of atomic.h apply to them directly.
 */
#ifndef MI_LAYOUT_H
#define MI_LAYOUT_H

#include <stddef.h>
#include <stdint.h>

/* Bytes 89 'M' 'E' 'M' 'I' 'P' 'C' 0A in memory order: a high-bit first byte
 * (not ASCII text), and a u64 that reads differently in the other byte order. */
#define MI_MAGIC UINT64_C(0x0A4350494D454D89)

/* Bump when a field changes meaning without changing any offset or size. */
#define MI_LAYOUT_REVISION 1u

#define MI_HEADER_BYTES 4096u          /* the header occupies the first page */
#define MI_NAME_CAPACITY 256u          /* bytes for the (scope-qualified) name */
#define MI_PATH_CAPACITY 1024u         /* bytes for a file-backed region's path */
#define MI_ATTACH_SLOTS 64u            /* attach-table rows */

/* Kinds: one namespace for every memipc object (SPEC §2). */
enum mi_kind {
    MI_KIND_REGION = 1,
    MI_KIND_MUTEX = 2,
    MI_KIND_SEMAPHORE = 3,
    MI_KIND_EVENT = 4,
    MI_KIND_CONDITION = 5,
    MI_KIND_RWLOCK = 6,
    MI_KIND_QUEUE = 7,
    MI_KIND_PUBSUB = 8,
    MI_KIND_RPC = 9,
};

/* Header flags. */
#define MI_FLAG_PERSIST 1u        /* survives its last close; removed only by unlink() */
#define MI_FLAG_FILE_BACKED 2u    /* user data lives in the file at `path`, not in this segment */
#define MI_FLAG_KNOWN (MI_FLAG_PERSIST | MI_FLAG_FILE_BACKED)

/* One row of the attach table: who holds this region open.
 *
 * A row belongs to the handle that holds an OFD read lock on the row's first
 * byte (see docs/design/lifetime.md); only that handle writes the row.  The
 * lock, not the row, says whether the row is live: a killed process loses its
 * lock at once, while its row keeps stale bytes until the next owner rewrites
 * it.  The row is informational (pid, start time for `info()` and `memipc ls`).
 *
 *  offset size field                  who writes / notes
 *  ------ ---- ---------------------- ----------------------------------------
 *       0    4 pid                    row owner; written last (release), cleared first
 *       4    4 reserved               zero
 *       8    8 start_ticks            row owner; /proc/<pid>/stat field 22, so
 *                                     a recycled pid does not match
 *      16    8 attached_realtime_ns   row owner; CLOCK_REALTIME at attach
 *      24    8 reserved               zero
 */
struct mi_attach_slot {
    uint32_t pid;
    uint32_t reserved0;
    uint64_t start_ticks;
    uint64_t attached_realtime_ns;
    uint64_t reserved1;
};

/* Region header: the first MI_HEADER_BYTES of every segment memipc creates.
 *
 * The creator writes every field, then publishes the header by storing
 * `magic` last with release order; an opener loads `magic` with acquire order
 * and only then reads the rest.  After publication only the attach table
 * changes.  Until `magic` is set the header is "not yet initialized": openers
 * wait for it (bounded), and a header whose creator died before publishing is
 * reported as corrupt.
 *
 *  offset size field                  who writes / notes
 *  ------ ---- ---------------------- ----------------------------------------
 *       0    8 magic                  creator, LAST (release); MI_MAGIC.
 *                                     Byte 0 is also the attach lock byte.
 *       8    4 abi_version            creator; MI_ABI_VERSION
 *      12    4 header_bytes           creator; MI_HEADER_BYTES
 *      16    4 kind                   creator; enum mi_kind
 *      20    4 flags                  creator; MI_FLAG_*
 *      24    8 size_bytes             creator; logical size of the user area
 *      32    8 data_offset            creator; where the user area starts in
 *                                     this segment (memory-backed: a multiple
 *                                     of the page size ≥ header_bytes; file-
 *                                     backed: 0, the data is the whole file)
 *      40    4 creator_pid            creator
 *      44    4 attach_slot_count      creator; MI_ATTACH_SLOTS
 *      48    8 creator_start_ticks    creator; pid reuse guard
 *      56    8 created_realtime_ns    creator; CLOCK_REALTIME
 *      64    2 name_length            creator; bytes used in `name`
 *      66    2 path_length            creator; bytes used in `path`
 *      68    4 attach_table_offset    creator; offsetof(attach)
 *      72   56 reserved               zero
 *     128  256 name                   creator; UTF-8 (ASCII by the name rules), NUL padded
 *     384 1024 path                   creator; absolute path of the data file, NUL padded
 *    1408  640 reserved               zero
 *    2048 2048 attach[64]             struct mi_attach_slot rows (see above)
 */
struct mi_region_header {
    uint64_t magic;
    uint32_t abi_version;
    uint32_t header_bytes;
    uint32_t kind;
    uint32_t flags;
    uint64_t size_bytes;
    uint64_t data_offset;
    uint32_t creator_pid;
    uint32_t attach_slot_count;
    uint64_t creator_start_ticks;
    uint64_t created_realtime_ns;
    uint16_t name_length;
    uint16_t path_length;
    uint32_t attach_table_offset;
    uint8_t reserved0[56];
    char name[MI_NAME_CAPACITY];
    char path[MI_PATH_CAPACITY];
    uint8_t reserved1[640];
    struct mi_attach_slot attach[MI_ATTACH_SLOTS];
};

#define MI_ROW(type, field, offset) \
    _Static_assert(offsetof(struct type, field) == (offset), #type "." #field " offset table")

MI_ROW(mi_attach_slot, pid, 0);
MI_ROW(mi_attach_slot, start_ticks, 8);
MI_ROW(mi_attach_slot, attached_realtime_ns, 16);
_Static_assert(sizeof(struct mi_attach_slot) == 32, "mi_attach_slot size");

MI_ROW(mi_region_header, magic, 0);
MI_ROW(mi_region_header, abi_version, 8);
MI_ROW(mi_region_header, header_bytes, 12);
MI_ROW(mi_region_header, kind, 16);
MI_ROW(mi_region_header, flags, 20);
MI_ROW(mi_region_header, size_bytes, 24);
MI_ROW(mi_region_header, data_offset, 32);
MI_ROW(mi_region_header, creator_pid, 40);
MI_ROW(mi_region_header, attach_slot_count, 44);
MI_ROW(mi_region_header, creator_start_ticks, 48);
MI_ROW(mi_region_header, created_realtime_ns, 56);
MI_ROW(mi_region_header, name_length, 64);
MI_ROW(mi_region_header, path_length, 66);
MI_ROW(mi_region_header, attach_table_offset, 68);
MI_ROW(mi_region_header, name, 128);
MI_ROW(mi_region_header, path, 384);
MI_ROW(mi_region_header, attach, 2048);
_Static_assert(sizeof(struct mi_region_header) == MI_HEADER_BYTES, "mi_region_header size");

/* Derived from the layout: any change of a size or offset above changes it. */
#define MI_ABI_VERSION                                                                      \
    ((uint32_t)(((MI_LAYOUT_REVISION & 0xffu) << 24)                                        \
                | ((sizeof(struct mi_region_header) ^ (sizeof(struct mi_attach_slot) << 13)   \
                    ^ (offsetof(struct mi_region_header, attach) << 2)                        \
                    ^ (offsetof(struct mi_region_header, path) << 7) ^ (MI_ATTACH_SLOTS << 17)) \
                   & 0xffffffu)))

#endif
