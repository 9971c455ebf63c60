# Per-query lists of output entries (column, value) of the tree query, in
# fixed-size chunks handed out by per-thread arenas. An entry is written
# once, where a buffer grown by realloc was copied at every doubling and
# faulted in fresh 4 KiB pages at each call: with 2**20 neurons at dim 4,
# growing the buffers took twice as long as the walk that filled them
# (bench/active_index.py). Arenas take memory in large slabs, on huge
# pages where the system grants them.
from libc.stdint cimport int32_t, int64_t
from libc.stdlib cimport free, realloc

cdef extern from *:
    """
    #include <stdlib.h>
    #if defined(__linux__)
    #include <sys/mman.h>
    #endif
    /* 2 MiB aligned, so that the kernel can back the slab by huge pages. */
    static void* subquad_slab_alloc(size_t n) {
    #if defined(__linux__)
        void* p = NULL;
        if (posix_memalign(&p, (size_t) 1 << 21, n) != 0)
            return NULL;
    #ifdef MADV_HUGEPAGE
        madvise(p, n, MADV_HUGEPAGE);
    #endif
        return p;
    #else
        return malloc(n);
    #endif
    }
    """
    void* slab_alloc "subquad_slab_alloc"(size_t n) noexcept nogil

cdef enum:
    # Entries per chunk; a scan appends at most CHUNK_ENTRIES // 2 entries
    # per query, so a chunk is closed at least half full.
    CHUNK_ENTRIES = 4096
    SLAB_BYTES = 8 << 20


cdef struct Chunk:
    # Followed by CHUNK_ENTRIES int32 columns, then CHUNK_ENTRIES values.
    Chunk* next
    int64_t size


cdef struct Arena:
    char** slabs
    int64_t n_slabs
    int64_t used  # bytes handed out from the last slab
    int64_t chunk_bytes


cdef struct EntryList:
    Chunk* first
    Chunk* last
    int64_t closed  # entries in the chunks before `last`


cdef inline int32_t* chunk_cols(Chunk* chunk) noexcept nogil:
    return <int32_t*> (chunk + 1)


cdef inline void* chunk_vals(Chunk* chunk) noexcept nogil:
    return <void*> (chunk_cols(chunk) + CHUNK_ENTRIES)


cdef inline void init_arena(Arena* arena, size_t itemsize) noexcept nogil:
    arena.slabs = NULL
    arena.n_slabs = 0
    arena.used = SLAB_BYTES
    # Rounded to 64 bytes: chunks start on cache lines.
    arena.chunk_bytes = (sizeof(Chunk) + CHUNK_ENTRIES * (sizeof(int32_t) + itemsize) + 63) & ~63


cdef inline Chunk* _new_chunk(Arena* arena) noexcept nogil:
    cdef void* grown
    cdef char* slab
    cdef Chunk* chunk
    if arena.used + arena.chunk_bytes > SLAB_BYTES:
        grown = realloc(arena.slabs, (arena.n_slabs + 1) * sizeof(char*))
        if grown == NULL:
            return NULL
        arena.slabs = <char**> grown
        slab = <char*> slab_alloc(SLAB_BYTES)
        if slab == NULL:
            return NULL
        arena.slabs[arena.n_slabs] = slab
        arena.n_slabs += 1
        arena.used = 0
    chunk = <Chunk*> (arena.slabs[arena.n_slabs - 1] + arena.used)
    arena.used += arena.chunk_bytes
    chunk.next = NULL
    chunk.size = 0
    return chunk


cdef inline int make_room(EntryList* entries, int64_t* fill, int64_t needed,
                          Arena* arena) noexcept nogil:
    """Room for `needed` (<= CHUNK_ENTRIES) more entries in the list's last
    chunk, which holds `fill` entries; a new chunk is linked (and `fill`
    reset) when it is full. Returns 0, or -1 when out of memory."""
    cdef Chunk* chunk
    if entries.last != NULL and fill[0] + needed <= CHUNK_ENTRIES:
        return 0
    chunk = _new_chunk(arena)
    if chunk == NULL:
        return -1
    if entries.last == NULL:
        entries.first = chunk
    else:
        entries.last.size = fill[0]
        entries.closed += fill[0]
        entries.last.next = chunk
    entries.last = chunk
    fill[0] = 0
    return 0


cdef inline void free_arenas(Arena* arenas, int64_t count) noexcept nogil:
    """Free the slabs of `count` arenas and the array holding them."""
    cdef int64_t t, s
    for t in range(count):
        for s in range(arenas[t].n_slabs):
            free(arenas[t].slabs[s])
        free(arenas[t].slabs)
    free(arenas)


cdef inline int64_t close_list(EntryList* entries, int64_t fill) noexcept nogil:
    """Record the last chunk's `fill`; returns the list's number of entries."""
    if entries.last == NULL:
        return 0
    entries.last.size = fill
    return entries.closed + fill
