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
#define MI_LAYOUT_REVISION 6u

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


/* ---- synchronization objects ------------------------------------------------
 *
 * Each object is a fixed-size struct placed either in its own named segment
 * (at offset 0 of the user area) or inside a user's region at an offset
 * (`Mutex.in_region`).  Its first word is a tag: 0 means "never initialized",
 * MI_TAG_INITIALIZING means "being initialized by whoever won the CAS from 0",
 * and MI_TAG(kind) means ready; the initializer stores the tag last (release),
 * users load it first (acquire).  Every operation re-checks the tag and reports
 * MI_CORRUPT if it changed, so a hostile overwrite is an error, not a crash.
 *
 * Owner records (mutex, write side of rwlock) hold pid + process start time +
 * pid namespace: a waiter whose futex slice expires checks that the owner
 * still runs (a recycled pid has a later start time; a zombie counts as dead)
 * and takes the lock over, reporting owner_died.  An owner in another pid
 * namespace cannot be checked and is assumed alive.
 */
#define MI_TAG_INITIALIZING 1u
#define MI_TAG(kind) ((0x5359u << 16) | (uint32_t)(kind)) /* 'SY' + kind */

#define MI_OWNER_MASK 0x3fffffffu    /* low 30 bits of a lock word: owner pid (0 = free) */
#define MI_WAITERS_BIT 0x80000000u   /* someone may sleep on the word: unlock must wake */

/* Robust owned word: the lock word plus who holds it.
 *
 * An identity is one u64, MI_IDENTITY(pid, start_ticks): the pid in the high
 * half, the low 32 bits of the process start time in the low half, read and
 * written in one atomic access so a checker never pairs one process's pid
 * with another's start time (an ABA that a separate start field allowed:
 * found by the 4-process mutex test).
 *
 *  offset size field              who writes / notes
 *  ------ ---- ------------------ --------------------------------------------
 *       0    4 word               (atomic) futex word: owner pid | MI_WAITERS_BIT
 *       4    4 owner_tid          owner; gettid() of the holding thread
 *       8    8 owner_identity     (atomic) owner; 0 while not yet recorded
 *      16    4 owner_pidns        owner; inode of /proc/self/ns/pid (truncated)
 *      20    4 sleepers           (atomic) waiters currently in futex_wait (stats)
 */
#define MI_IDENTITY(pid, start_ticks) (((uint64_t)(pid) << 32) | ((uint64_t)(start_ticks) & 0xffffffffu))
#define MI_IDENTITY_PID(identity) ((uint32_t)((identity) >> 32))

struct mi_owned {
    uint32_t word;
    uint32_t owner_tid;
    uint64_t owner_identity;
    uint32_t owner_pidns;
    uint32_t sleepers;
};

/* Common head of every sync object.
 *
 *  offset size field          who writes / notes
 *  ------ ---- -------------- ------------------------------------------------
 *       0    4 tag            initializer, LAST (release); see above
 *       4    4 flags          initializer; per kind (event: MI_EVENT_MANUAL)
 *       8    8 operations     (relaxed) acquisitions / sets / releases: stats
 *      16    8 contentions    (relaxed) operations that had to sleep: stats
 *      24    8 owner_deaths   (relaxed) owner deaths recovered: stats
 */
struct mi_sync_head {
    uint32_t tag;
    uint32_t flags;
    uint64_t operations;
    uint64_t contentions;
    uint64_t owner_deaths;
};

/* Mutex (64 bytes).
 *
 *  offset size field          who writes / notes
 *  ------ ---- -------------- ------------------------------------------------
 *       0   32 head           struct mi_sync_head
 *      32   24 lock           struct mi_owned
 *      56    4 spin_estimate  (relaxed) adaptive spin length in ns; clamped on read
 *      60    4 reserved       zero
 */
struct mi_mutex {
    struct mi_sync_head head;
    struct mi_owned lock;
    uint32_t spin_estimate;
    uint32_t reserved;
};

/* Semaphore (64 bytes).
 *
 *  offset size field          who writes / notes
 *  ------ ---- -------------- ------------------------------------------------
 *       0   32 head           struct mi_sync_head
 *      32    4 value          (atomic) futex word: the count
 *      36    4 maximum        initializer; release() beyond it fails
 *      40    4 sleepers       (atomic) waiters in futex_wait
 *      44    4 spin_estimate  (relaxed) adaptive spin length in ns
 *      48   16 reserved       zero
 */
struct mi_semaphore {
    struct mi_sync_head head;
    uint32_t value;
    uint32_t maximum;
    uint32_t sleepers;
    uint32_t spin_estimate;
    uint8_t reserved[16];
};

#define MI_EVENT_MANUAL 1u

/* Event (64 bytes).
 *
 * Manual reset: `state` is 0 or 1.  Auto reset: `state` counts releases not
 * yet taken (tokens); set() adds one but never more than registered+1, so
 * K sets with N >= K waiters release exactly K of them, and a set with nobody
 * waiting leaves the event signaled for the next arrival (Win32 semantics).
 *
 *  offset size field          who writes / notes
 *  ------ ---- -------------- ------------------------------------------------
 *       0   32 head           struct mi_sync_head (flags: MI_EVENT_MANUAL)
 *      32    4 state          (atomic) futex word: signaled / tokens
 *      36    4 registered     (atomic) waiters that registered to be released
 *      40    4 spin_estimate  (relaxed) adaptive spin length in ns
 *      44   20 reserved       zero
 */
struct mi_event {
    struct mi_sync_head head;
    uint32_t state;
    uint32_t registered;
    uint32_t spin_estimate;
    uint8_t reserved[20];
};

/* Condition (64 bytes).
 *
 * `sequence` is the futex word; notify(n) grants min(n, un-notified sleepers)
 * wake-ups by adding them to `pending`, bumps `sequence` and wakes that many.
 * A waiter consumes one pending wake-up only once `sequence` has moved since
 * it began waiting, so later arrivals do not steal earlier notifications.
 *
 *  offset size field          who writes / notes
 *  ------ ---- -------------- ------------------------------------------------
 *       0   32 head           struct mi_sync_head
 *      32    4 sequence       (atomic) futex word; notify bumps it
 *      36    4 sleepers       (atomic) waiters between prepare and done
 *      40    4 pending        (atomic) wake-ups granted, not yet consumed
 *      44   20 reserved       zero
 */
struct mi_condition {
    struct mi_sync_head head;
    uint32_t sequence;
    uint32_t sleepers;
    uint32_t pending;
    uint8_t reserved[20];
};

#define MI_RWLOCK_READER_SLOTS 120u

/* One reader of an RWLock: present while `identity` (MI_IDENTITY) is non-zero;
 * claimed with a CAS from 0, so the claim and the identity are one word. */
struct mi_reader_slot {
    uint64_t identity;
    uint32_t tid;
    uint32_t pidns;
};

/* RWLock (2048 bytes).
 *
 * Writers serialize on `writer` (a robust owned word, as a Mutex), then close
 * `gate` so no new reader enters, then wait until every reader slot is empty.
 * Readers enter only through an open gate and hold one slot each, so a dead
 * reader's slot is found and cleared by a waiting writer, and a dead writer is
 * taken over by the next writer (owner_died) or by a waiting reader, which
 * marks the lock `abandoned` so the next writer still hears about it.
 *
 *  offset size field          who writes / notes
 *  ------ ---- -------------- ------------------------------------------------
 *       0   32 head           struct mi_sync_head
 *      32   24 writer         struct mi_owned
 *      56    4 gate           (atomic) futex word for readers: 0 open, 1 closed
 *      60    4 reader_exits   (atomic) futex word for a writer: bumped by leaving readers
 *      64    4 abandoned      (atomic) 1 if a writer died and no writer has been told
 *      68    4 spin_estimate  (relaxed) adaptive spin length in ns
 *      72   56 reserved       zero
 *     128 1920 readers[120]   struct mi_reader_slot (16 bytes each)
 */
struct mi_rwlock {
    struct mi_sync_head head;
    struct mi_owned writer;
    uint32_t gate;
    uint32_t reader_exits;
    uint32_t abandoned;
    uint32_t spin_estimate;
    uint8_t reserved[56];
    struct mi_reader_slot readers[MI_RWLOCK_READER_SLOTS];
};

MI_ROW(mi_owned, word, 0);
MI_ROW(mi_owned, owner_tid, 4);
MI_ROW(mi_owned, owner_identity, 8);
MI_ROW(mi_owned, owner_pidns, 16);
MI_ROW(mi_owned, sleepers, 20);
_Static_assert(sizeof(struct mi_owned) == 24, "mi_owned size");
MI_ROW(mi_sync_head, tag, 0);
MI_ROW(mi_sync_head, flags, 4);
MI_ROW(mi_sync_head, operations, 8);
MI_ROW(mi_sync_head, contentions, 16);
MI_ROW(mi_sync_head, owner_deaths, 24);
_Static_assert(sizeof(struct mi_sync_head) == 32, "mi_sync_head size");
MI_ROW(mi_mutex, lock, 32);
MI_ROW(mi_mutex, spin_estimate, 56);
_Static_assert(sizeof(struct mi_mutex) == 64, "mi_mutex size");
MI_ROW(mi_semaphore, value, 32);
MI_ROW(mi_semaphore, maximum, 36);
MI_ROW(mi_semaphore, sleepers, 40);
MI_ROW(mi_semaphore, spin_estimate, 44);
_Static_assert(sizeof(struct mi_semaphore) == 64, "mi_semaphore size");
MI_ROW(mi_event, state, 32);
MI_ROW(mi_event, registered, 36);
MI_ROW(mi_event, spin_estimate, 40);
_Static_assert(sizeof(struct mi_event) == 64, "mi_event size");
MI_ROW(mi_condition, sequence, 32);
MI_ROW(mi_condition, sleepers, 36);
MI_ROW(mi_condition, pending, 40);
_Static_assert(sizeof(struct mi_condition) == 64, "mi_condition size");
MI_ROW(mi_reader_slot, identity, 0);
MI_ROW(mi_reader_slot, tid, 8);
MI_ROW(mi_reader_slot, pidns, 12);
_Static_assert(sizeof(struct mi_reader_slot) == 16, "mi_reader_slot size");
MI_ROW(mi_rwlock, writer, 32);
MI_ROW(mi_rwlock, gate, 56);
MI_ROW(mi_rwlock, reader_exits, 60);
MI_ROW(mi_rwlock, abandoned, 64);
MI_ROW(mi_rwlock, spin_estimate, 68);
MI_ROW(mi_rwlock, readers, 128);
_Static_assert(sizeof(struct mi_rwlock) == 2048, "mi_rwlock size");


/* ---- message rings (Queue) ---------------------------------------------------
 *
 * A ring is a control block followed by `capacity` bytes of records.
 * Positions are u64 byte counts that never wrap; the byte index of a position
 * is `position & (capacity - 1)` (capacity is a power of two).  Records are
 * 32-byte aligned and never straddle the end: a producer that would straddle
 * first writes a PADDING record to the end.  Invariants, checked on every
 * read because the control block is shared with untrusted processes:
 *     release <= head <= tail <= release + capacity
 *
 *   release  oldest position whose record is not yet consumed; producers may
 *            write up to release + capacity
 *   head     next record for consumers to claim
 *   tail     next free position for producers
 *
 * Record header (32 bytes), then `length` payload bytes, padded to 32:
 *
 *  offset size field          who writes / notes
 *  ------ ---- -------------- ------------------------------------------------
 *       0    4 state          (atomic) MI_RECORD_*: WRITING → COMMITTED →
 *                             READING → CONSUMED, or PADDING (wrap filler,
 *                             aborted loan, message of a dead producer)
 *       4    4 length         producer; payload bytes (<= max_message)
 *       8    8 position       producer; the record's own position (a stale or
 *                             forged header fails this check)
 *      16    4 pid            producer while WRITING, consumer while READING
 *      20    4 pidns          same; see proc.c
 *      24    8 start_ticks    same; liveness check that pid reuse cannot fool
 */
#define MI_RECORD_WRITING 1u
#define MI_RECORD_COMMITTED 2u
#define MI_RECORD_PADDING 3u
#define MI_RECORD_READING 4u
#define MI_RECORD_CONSUMED 5u
#define MI_RECORD_HEADER 32u
#define MI_RING_SPSC 1u

struct mi_record {
    uint32_t state;
    uint32_t length;
    uint64_t position;
    uint32_t pid;
    uint32_t pidns;
    uint64_t start_ticks;
};

/* Ring control block (1024 bytes; the records follow at `data_offset`).
 * Fields that different processes write sit on separate cache lines.
 *
 *  offset size field              who writes / notes
 *  ------ ---- ------------------ ----------------------------------------------
 *       0   32 head_block         struct mi_sync_head (tag MI_TAG(QUEUE), flags MI_RING_*)
 *      32    8 capacity           creator; power of two
 *      40    8 max_message        creator; <= capacity / 2 - MI_RECORD_HEADER
 *      48    8 data_offset        creator; == 1024
 *      64   24 producer_lock      struct mi_owned: serializes reservations (mpmc)
 *     128    8 tail               (atomic) producers; see above
 *     192   24 consumer_lock      struct mi_owned: serializes claims (mpmc)
 *     256    8 head               (atomic) consumers
 *     320    8 release            (atomic) consumers, or a producer recovering a dead reader
 *     384    4 data_sequence      (atomic) futex word consumers sleep on; bumped per commit
 *     388    4 consumers_asleep   (atomic) consumers in futex_wait
 *     392    4 consumer_spin      (relaxed) adaptive spin estimate for receivers, clamped on read
 *     448    4 space_sequence     (atomic) futex word producers sleep on; bumped per release
 *     452    4 producers_asleep   (atomic) producers in futex_wait
 *     456    4 producer_spin      (relaxed) adaptive spin estimate for senders
 *     512    8 sent               (relaxed) messages committed        — stats
 *     520    8 received           (relaxed) messages claimed by receivers — stats
 *     528    8 bytes_sent         (relaxed)                           — stats
 *     536    8 bytes_received     (relaxed)                           — stats
 *     544    8 waits              (relaxed) operations that slept     — stats
 *     552    8 drops              (relaxed) records lost to dead peers  — stats
 *     560    8 lost_reads         (relaxed) sent messages whose reader died before releasing
 *     568  456 reserved           zero
 */
struct mi_ring {
    struct mi_sync_head head_block;
    uint64_t capacity;
    uint64_t max_message;
    uint64_t data_offset;
    uint8_t pad0[8];
    struct mi_owned producer_lock;
    uint8_t pad1[40];
    uint64_t tail;
    uint8_t pad2[56];
    struct mi_owned consumer_lock;
    uint8_t pad3[40];
    uint64_t head;
    uint8_t pad4[56];
    uint64_t release;
    uint8_t pad5[56];
    uint32_t data_sequence;
    uint32_t consumers_asleep;
    uint32_t consumer_spin;
    uint8_t pad6[52];
    uint32_t space_sequence;
    uint32_t producers_asleep;
    uint32_t producer_spin;
    uint8_t pad7[52];
    uint64_t sent;
    uint64_t received;
    uint64_t bytes_sent;
    uint64_t bytes_received;
    uint64_t waits;
    uint64_t drops;
    uint64_t lost_reads;
    uint8_t reserved[456];
};

MI_ROW(mi_record, state, 0);
MI_ROW(mi_record, length, 4);
MI_ROW(mi_record, position, 8);
MI_ROW(mi_record, pid, 16);
MI_ROW(mi_record, pidns, 20);
MI_ROW(mi_record, start_ticks, 24);
_Static_assert(sizeof(struct mi_record) == MI_RECORD_HEADER, "mi_record size");
MI_ROW(mi_ring, capacity, 32);
MI_ROW(mi_ring, max_message, 40);
MI_ROW(mi_ring, data_offset, 48);
MI_ROW(mi_ring, producer_lock, 64);
MI_ROW(mi_ring, tail, 128);
MI_ROW(mi_ring, consumer_lock, 192);
MI_ROW(mi_ring, head, 256);
MI_ROW(mi_ring, release, 320);
MI_ROW(mi_ring, data_sequence, 384);
MI_ROW(mi_ring, consumers_asleep, 388);
MI_ROW(mi_ring, space_sequence, 448);
MI_ROW(mi_ring, producers_asleep, 452);
MI_ROW(mi_ring, consumer_spin, 392);
MI_ROW(mi_ring, producer_spin, 456);
MI_ROW(mi_ring, sent, 512);
MI_ROW(mi_ring, received, 520);
MI_ROW(mi_ring, bytes_sent, 528);
MI_ROW(mi_ring, bytes_received, 536);
MI_ROW(mi_ring, waits, 544);
MI_ROW(mi_ring, drops, 552);
MI_ROW(mi_ring, lost_reads, 560);
_Static_assert(sizeof(struct mi_ring) == 1024, "mi_ring size");

/* ---- Publish/subscribe bus (kind PUBSUB) ---------------------------------
 *
 * One segment: the control block (1024 bytes), MI_BUS_SLOTS subscriber slots
 * (64 bytes each), then `capacity` bytes of records.  The protocol and why
 * it is safe: bus.c and docs/design/pubsub.md.
 *
 * Bus record header (32 bytes; the payload follows, records 32-byte aligned):
 *
 *  offset size field      who writes / notes
 *  ------ ---- ---------- -----------------------------------------------------
 *       0    8 position   publisher; the record's own position (a stale or
 *                         forged header fails this check)
 *       8    8 sequence   publisher; messages published before this one
 *      16    4 length     publisher; payload bytes (PADDING: to the ring's end)
 *      20    4 kind       publisher; MI_BUS_MESSAGE or MI_BUS_PADDING
 *      24    8 reserved   zero
 */
#define MI_BUS_MESSAGE 1u
#define MI_BUS_PADDING 2u
#define MI_BUS_SLOTS 128u
#define MI_BUS_OVERWRITE 1u

struct mi_bus_record {
    uint64_t position;
    uint64_t sequence;
    uint32_t length;
    uint32_t kind;
    uint64_t reserved;
};

/* Subscriber slot (64 bytes).  Free while `identity` is 0; a subscriber
 * claims it with a CAS under the publisher lock and frees it on close; a
 * waiting publisher frees the slots of subscribers that died.
 *
 *  offset size field      who writes / notes
 *  ------ ---- ---------- -----------------------------------------------------
 *       0    8 identity   (atomic) subscriber; MI_IDENTITY(pid, start), 0 = free
 *       8    4 pidns      subscriber; see proc.c
 *      12    4 pid        subscriber; for display
 *      16    8 cursor     (atomic) subscriber; next position it will read
 *      24    8 received   (relaxed) subscriber; messages read    — stats
 *      32    8 missed     (relaxed) subscriber; messages skipped — stats
 *      40    8 bytes      (relaxed) subscriber; payload bytes read — stats
 *      48    8 start_ticks subscriber; full process start time (display)
 *      56    8 next_sequence (relaxed) subscriber; sequence it expects next (lag)
 */
struct mi_bus_slot {
    uint64_t identity;
    uint32_t pidns;
    uint32_t pid;
    uint64_t cursor;
    uint64_t received;
    uint64_t missed;
    uint64_t bytes;
    uint64_t start_ticks;
    uint64_t next_sequence;
};

/* Bus control block (1024 bytes).
 *
 *  offset size field              who writes / notes
 *  ------ ---- ------------------ ----------------------------------------------
 *       0   32 head_block         struct mi_sync_head (tag MI_TAG(PUBSUB), flags MI_BUS_*)
 *      32    8 capacity           creator; power of two
 *      40    8 max_message        creator; <= capacity / 2 - MI_RECORD_HEADER
 *      48    8 data_offset        creator; == 1024 + 64 * MI_BUS_SLOTS
 *      56    4 slots              creator; == MI_BUS_SLOTS
 *      60    4 slots_used         (atomic) joiners, under the publisher lock;
 *                                 1 + highest slot ever claimed (scan bound)
 *      64   24 publisher_lock     struct mi_owned: one publisher writes at a time
 *     128    8 tail               (atomic) publisher; end of the published records
 *     136    8 oldest             (atomic) publisher; first record still intact;
 *                                 moved *before* its room is overwritten
 *     144    8 floor              publisher, under the lock; <= every live cursor
 *     152    8 next_sequence      publisher, under the lock; messages published
 *     160    8 space_wanted       (relaxed) a waiting publisher; the cursor position
 *                                 that, once crossed, is worth waking it for
 *     192    4 data_sequence      (atomic) futex word subscribers sleep on
 *     196    4 subscribers_asleep (atomic)
 *     200    4 subscriber_spin    (relaxed) adaptive spin estimate
 *     256    4 space_sequence     (atomic) futex word a blocked publisher sleeps on
 *     260    4 publishers_waiting (atomic) publishers waiting for room
 *     264    4 publisher_spin     (relaxed) adaptive spin estimate
 *     268    4 publishers_asleep  (atomic) publishers in futex_wait
 *     320    8 sent               (relaxed) messages published         — stats
 *     328    8 bytes_sent         (relaxed)                            — stats
 *     336    8 waits              (relaxed) sends that waited for room — stats
 *     344    8 subscribers_lost   (relaxed) dead subscribers released  — stats
 *     352    8 joins              (relaxed) subscribers that joined    — stats
 *     360  664 reserved           zero
 */
struct mi_bus {
    struct mi_sync_head head_block;
    uint64_t capacity;
    uint64_t max_message;
    uint64_t data_offset;
    uint32_t slots;
    uint32_t slots_used;
    struct mi_owned publisher_lock;
    uint8_t pad1[40];
    uint64_t tail;
    uint64_t oldest;
    uint64_t floor;
    uint64_t next_sequence;
    uint64_t space_wanted;
    uint8_t pad2[24];
    uint32_t data_sequence;
    uint32_t subscribers_asleep;
    uint32_t subscriber_spin;
    uint8_t pad3[52];
    uint32_t space_sequence;
    uint32_t publishers_waiting;
    uint32_t publisher_spin;
    uint32_t publishers_asleep;
    uint8_t pad4[48];
    uint64_t sent;
    uint64_t bytes_sent;
    uint64_t waits;
    uint64_t subscribers_lost;
    uint64_t joins;
    uint8_t reserved[664];
};

MI_ROW(mi_bus_record, position, 0);
MI_ROW(mi_bus_record, sequence, 8);
MI_ROW(mi_bus_record, length, 16);
MI_ROW(mi_bus_record, kind, 20);
_Static_assert(sizeof(struct mi_bus_record) == MI_RECORD_HEADER, "mi_bus_record size");
MI_ROW(mi_bus_slot, identity, 0);
MI_ROW(mi_bus_slot, pidns, 8);
MI_ROW(mi_bus_slot, pid, 12);
MI_ROW(mi_bus_slot, cursor, 16);
MI_ROW(mi_bus_slot, received, 24);
MI_ROW(mi_bus_slot, missed, 32);
MI_ROW(mi_bus_slot, bytes, 40);
MI_ROW(mi_bus_slot, start_ticks, 48);
MI_ROW(mi_bus_slot, next_sequence, 56);
_Static_assert(sizeof(struct mi_bus_slot) == 64, "mi_bus_slot size");
MI_ROW(mi_bus, capacity, 32);
MI_ROW(mi_bus, max_message, 40);
MI_ROW(mi_bus, data_offset, 48);
MI_ROW(mi_bus, slots, 56);
MI_ROW(mi_bus, slots_used, 60);
MI_ROW(mi_bus, publisher_lock, 64);
MI_ROW(mi_bus, tail, 128);
MI_ROW(mi_bus, oldest, 136);
MI_ROW(mi_bus, floor, 144);
MI_ROW(mi_bus, next_sequence, 152);
MI_ROW(mi_bus, space_wanted, 160);
MI_ROW(mi_bus, data_sequence, 192);
MI_ROW(mi_bus, subscribers_asleep, 196);
MI_ROW(mi_bus, subscriber_spin, 200);
MI_ROW(mi_bus, space_sequence, 256);
MI_ROW(mi_bus, publishers_waiting, 260);
MI_ROW(mi_bus, publisher_spin, 264);
MI_ROW(mi_bus, publishers_asleep, 268);
MI_ROW(mi_bus, sent, 320);
MI_ROW(mi_bus, bytes_sent, 328);
MI_ROW(mi_bus, waits, 336);
MI_ROW(mi_bus, subscribers_lost, 344);
MI_ROW(mi_bus, joins, 352);
_Static_assert(sizeof(struct mi_bus) == 1024, "mi_bus size");
#define MI_BUS_DATA_OFFSET (sizeof(struct mi_bus) + MI_BUS_SLOTS * sizeof(struct mi_bus_slot))

/* Derived from the layout: any change of a size or offset above changes it. */
#define MI_ABI_VERSION                                                                      \
    ((uint32_t)(((MI_LAYOUT_REVISION & 0xffu) << 24)                                        \
                | ((sizeof(struct mi_region_header) ^ (sizeof(struct mi_attach_slot) << 13)   \
                    ^ (offsetof(struct mi_region_header, attach) << 2)                        \
                    ^ (offsetof(struct mi_region_header, path) << 7) ^ (MI_ATTACH_SLOTS << 17)  \
                    ^ (sizeof(struct mi_rwlock) << 3) ^ (sizeof(struct mi_owned) << 15)        \
                    ^ (offsetof(struct mi_rwlock, readers) << 9) ^ (sizeof(struct mi_ring) << 5)   \
                    ^ (offsetof(struct mi_ring, release) << 11) ^ (sizeof(struct mi_bus) << 1)       \
                    ^ (offsetof(struct mi_bus, oldest) << 6) ^ (MI_BUS_SLOTS << 4))                   \
                   & 0xffffffu)))

#endif
