//! The binary's global allocator. Start-up makes a few hundred small allocations (clap's
//! parser, the environment) and frees most of them soon after. musl's allocator maps and
//! unmaps pages for them, and that cost was most of envharness-static's own start-up time
//! (see the README's Performance section). So small blocks come from an [`Arena`] in `.bss`
//! while it has room. Its space is not reused after a free, except that the newest block grows
//! and shrinks in place. Every other allocation comes from the system allocator, so the waste
//! is bounded by the arena's size, and only the pages actually touched count in memory use.
//!
//! Blocks of a kilobyte or more have an arena of their own ([`Arenas`]): a vector that keeps
//! growing (clap's list of options, a script's environment) is then usually the newest block
//! of its arena and grows in place, where among small blocks it was copied at each doubling
//! and left its old copies behind, pages that start-up touched for nothing.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Blocks larger than this go to the system allocator even while the arena has room.
const LARGEST_IN_ARENA: usize = 64 * 1024;

/// Blocks of this size or more come from [`Arenas`]'s arena for large blocks.
const LARGE_BLOCK: usize = 1024;

/// The binary's arenas; `main.rs` makes [`StartupAllocator`], which allocates from them, the
/// global allocator.
static STARTUP_ARENAS: Arenas<{ 256 * 1024 }> = Arenas::new();

/// The global allocator of the binary: [`STARTUP_ARENAS`] while they are open, then the system's.
pub struct StartupAllocator;

// SAFETY: every call is passed on unchanged to the arenas, a GlobalAlloc.
unsafe impl GlobalAlloc for StartupAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        STARTUP_ARENAS.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        STARTUP_ARENAS.alloc_zeroed(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        STARTUP_ARENAS.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        STARTUP_ARENAS.realloc(ptr, layout, new_size)
    }
}

/// Start-up is over: the arenas hand out only the pages start-up touched (a block freed from
/// the top makes room again), and every other block comes from the system allocator, whose
/// freed memory is reused. A long-running harness (`--init`, `--watch`) would otherwise touch
/// new arena pages with every re-run until the arena is full, which shows as RSS growth; and
/// with every block after start-up left to musl's allocator, each short-lived one (a path to
/// look up) cost a page mapped, faulted in and unmapped.
pub fn end_startup() {
    STARTUP_ARENAS.seal();
}

/// Two arenas of `SIZE` bytes: one for blocks smaller than [`LARGE_BLOCK`], one for the others.
/// The large one's offset shares a page with the small one's last bytes, which start-up does
/// not reach, and with its own first bytes.
#[repr(C, align(4096))]
pub struct Arenas<const SIZE: usize> {
    small: Arena<SIZE>,
    large: Arena<SIZE>,
}

impl<const SIZE: usize> Arenas<SIZE> {
    pub const fn new() -> Self {
        Arenas {
            small: Arena::new(),
            large: Arena::new(),
        }
    }

    /// The arena a new block of `size` bytes comes from.
    fn for_size(&self, size: usize) -> &Arena<SIZE> {
        if size < LARGE_BLOCK {
            &self.small
        } else {
            &self.large
        }
    }

    /// The arena `ptr` belongs to; the small one also stands for the system allocator.
    fn holding(&self, ptr: *mut u8) -> &Arena<SIZE> {
        if self.large.contains(ptr) {
            &self.large
        } else {
            &self.small
        }
    }

    pub fn seal(&self) {
        self.small.seal();
        self.large.seal();
    }
}

impl<const SIZE: usize> Default for Arenas<SIZE> {
    fn default() -> Self {
        Self::new()
    }
}

// SAFETY: each block is handed out by one arena (or the system allocator, through it) and
// every later call on it goes to that arena, found by address.
unsafe impl<const SIZE: usize> GlobalAlloc for Arenas<SIZE> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.for_size(layout.size()).alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        self.for_size(layout.size()).alloc_zeroed(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        self.holding(ptr).dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let holder = self.holding(ptr);
        let crosses = holder.contains(ptr)
            && new_size > layout.size()
            && !std::ptr::eq(holder, self.for_size(new_size));
        if !crosses {
            return holder.realloc(ptr, layout, new_size);
        }
        move_block(ptr, layout, new_size, self, holder)
    }
}

/// `SIZE` bytes handed out by bumping an offset, falling back to [`System`] when full.
///
/// The offset comes first so that it shares a page with the first blocks, which start-up
/// touches anyway.
#[repr(C)]
pub struct Arena<const SIZE: usize> {
    /// Offset of the first free byte.
    top: AtomicUsize,
    /// How many bytes at the end no block may use: none until [`Arena::seal`]. (Zero at
    /// first, like the rest, so that the arena is in `.bss`, not in the file.)
    withheld: AtomicUsize,
    bytes: UnsafeCell<[u8; SIZE]>,
}

// SAFETY: the bytes are only handed out in disjoint blocks, reserved by atomic updates of `top`;
// a free releases its bytes (Release) before another thread acquires them (Acquire).
unsafe impl<const SIZE: usize> Sync for Arena<SIZE> {}

impl<const SIZE: usize> Arena<SIZE> {
    pub const fn new() -> Self {
        Arena {
            top: AtomicUsize::new(0),
            withheld: AtomicUsize::new(0),
            bytes: UnsafeCell::new([0; SIZE]),
        }
    }

    fn base(&self) -> usize {
        self.bytes.get() as usize
    }

    fn contains(&self, ptr: *mut u8) -> bool {
        (ptr as usize).wrapping_sub(self.base()) < SIZE
    }

    /// Reserves `layout` at the top, or None when it is too large or does not fit.
    fn bump(&self, layout: Layout) -> Option<*mut u8> {
        if layout.size() > LARGEST_IN_ARENA {
            return None;
        }
        let limit = self.limit();
        let mut top = self.top.load(Ordering::Acquire);
        loop {
            // A mask, not next_multiple_of: the alignment is a power of two (Layout says so)
            // and a division in every allocation was a tenth of its cost.
            let align_mask = layout.align() - 1;
            let start = ((self.base() + top + align_mask) & !align_mask) - self.base();
            let end = start.checked_add(layout.size())?;
            if end > limit {
                return None;
            }
            match self
                .top
                .compare_exchange_weak(top, end, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Some((self.base() + start) as *mut u8),
                Err(now) => top = now,
            }
        }
    }

    /// From now on blocks, and growth, come from the arena only below the end of the page
    /// that holds its top (pages already touched), and from the system allocator beyond;
    /// blocks already in the arena stay valid and are freed as before.
    pub fn seal(&self) {
        let top = self.top.load(Ordering::Acquire);
        let touched = (self.base() + top).next_multiple_of(4096) - self.base();
        self.withheld
            .store(SIZE - touched.min(SIZE), Ordering::Release);
    }

    /// Where blocks must end.
    fn limit(&self) -> usize {
        SIZE - self.withheld.load(Ordering::Acquire)
    }

    /// Moves the top when `ptr` (of `old` bytes) is the newest block and `new` bytes fit.
    fn resize_newest(&self, ptr: *mut u8, old: usize, new: usize) -> bool {
        let start = ptr as usize - self.base();
        start + new <= self.limit()
            && self
                .top
                .compare_exchange(
                    start + old,
                    start + new,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok()
    }
}

impl<const SIZE: usize> Default for Arena<SIZE> {
    fn default() -> Self {
        Self::new()
    }
}

// SAFETY: every block handed out is either a range of the arena disjoint from every other live
// block, aligned as asked, or the system allocator's; dealloc and realloc tell them apart by
// address.
unsafe impl<const SIZE: usize> GlobalAlloc for Arena<SIZE> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match self.bump(layout) {
            Some(ptr) => ptr,
            None => System.alloc(layout),
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        match self.bump(layout) {
            // The bytes may have belonged to a block freed from the top.
            Some(ptr) => {
                ptr.write_bytes(0, layout.size());
                ptr
            }
            None => System.alloc_zeroed(layout),
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if self.contains(ptr) {
            self.resize_newest(ptr, layout.size(), 0);
        } else {
            System.dealloc(ptr, layout)
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !self.contains(ptr) {
            return System.realloc(ptr, layout, new_size);
        }
        if new_size <= layout.size() {
            // The freed tail goes back when this is the newest block; either way the block
            // stays, and a later free with the smaller size still finds the top.
            self.resize_newest(ptr, layout.size(), new_size);
            return ptr;
        }
        if new_size <= LARGEST_IN_ARENA && self.resize_newest(ptr, layout.size(), new_size) {
            return ptr;
        }
        move_block(ptr, layout, new_size, self, self)
    }
}

/// Realloc by moving: a block of `new_size` from `to`, the bytes copied, the old block freed
/// in `from`, which handed it out.
///
/// # Safety
/// As for [`GlobalAlloc::realloc`], with `from` the allocator of `ptr`.
unsafe fn move_block(
    ptr: *mut u8,
    layout: Layout,
    new_size: usize,
    to: &impl GlobalAlloc,
    from: &impl GlobalAlloc,
) -> *mut u8 {
    // SAFETY: the caller guarantees that new_size, rounded up to the alignment, does not
    // overflow isize (GlobalAlloc::realloc).
    let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
    let new = to.alloc(new_layout);
    if !new.is_null() {
        std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
        from.dealloc(ptr, layout);
    }
    new
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).unwrap()
    }

    fn alloc<const N: usize>(arena: &Arena<N>, size: usize, align: usize) -> *mut u8 {
        // SAFETY: non-zero sizes, valid layouts.
        unsafe { arena.alloc(layout(size, align)) }
    }

    #[test]
    fn blocks_are_aligned_disjoint_and_in_the_arena() {
        let arena = Box::new(Arena::<{ 4 * 4096 }>::new());
        let a = alloc(&arena, 3, 1);
        let b = alloc(&arena, 8, 8);
        let c = alloc(&arena, 100, 64);
        // More than the arena's own alignment: the address, not the offset, must be aligned.
        let d = alloc(&arena, 16, 8192);
        assert!(arena.contains(d));
        assert!(d as usize >= c as usize + 100);
        for (ptr, align) in [(a, 1), (b, 8), (c, 64), (d, 8192)] {
            assert!(arena.contains(ptr));
            assert_eq!(ptr as usize % align, 0);
        }
        assert!(b as usize >= a as usize + 3);
        assert!(c as usize >= b as usize + 8);
    }

    #[test]
    fn a_sealed_arena_hands_out_only_the_page_it_touched_and_frees_what_it_gave() {
        let arena = Box::new(Arena::<{ 4 * 4096 }>::new());
        let before = alloc(&arena, 64, 8);
        assert!(arena.contains(before));
        arena.seal();
        let room = (before as usize + 64).next_multiple_of(4096) - (before as usize + 64);
        // SAFETY: every block is live with the layout given until freed.
        unsafe {
            let grown = arena.realloc(before, layout(64, 8), 64 + room);
            assert_eq!(
                grown, before,
                "the newest block grows within the touched page"
            );
            let moved = arena.realloc(grown, layout(64 + room, 8), 64 + room + 1);
            assert!(!arena.contains(moved), "growth past it moves to the system");
            let below = alloc(&arena, 64, 8);
            assert_eq!(below, before, "the block freed from the top made room");
            let beyond = alloc(&arena, room + 1, 8);
            assert!(
                !arena.contains(beyond),
                "a block past the page comes from the system"
            );
            arena.dealloc(beyond, layout(room + 1, 8));
            arena.dealloc(below, layout(64, 8));
            arena.dealloc(moved, layout(64 + room + 1, 8));
        }
    }

    #[test]
    fn large_blocks_and_blocks_that_do_not_fit_come_from_the_system() {
        let arena = Box::new(Arena::<4096>::new());
        let first = alloc(&arena, 4000, 8);
        assert!(arena.contains(first));
        let overflow = alloc(&arena, 200, 8);
        assert!(!overflow.is_null() && !arena.contains(overflow));
        let big = Box::new(Arena::<{ 2 * LARGEST_IN_ARENA }>::new());
        let large = alloc(&big, LARGEST_IN_ARENA + 1, 8);
        assert!(!large.is_null() && !big.contains(large));
        // SAFETY: allocated above with these layouts.
        unsafe {
            arena.dealloc(overflow, layout(200, 8));
            big.dealloc(large, layout(LARGEST_IN_ARENA + 1, 8));
        }
    }

    #[test]
    fn the_newest_block_grows_in_place_and_its_space_is_reused_after_a_free() {
        let arena = Box::new(Arena::<4096>::new());
        let a = alloc(&arena, 16, 8);
        // SAFETY: `a` is live with layout (16, 8); the writes stay within its sizes.
        unsafe {
            a.write_bytes(7, 16);
            let grown = arena.realloc(a, layout(16, 8), 64);
            assert_eq!(grown, a);
            let b = alloc(&arena, 8, 8);
            assert!(b as usize >= a as usize + 64);
            // `a` is no longer the newest block: it moves, keeping its bytes.
            let moved = arena.realloc(a, layout(64, 8), 128);
            assert_ne!(moved, a);
            assert_eq!(std::slice::from_raw_parts(moved, 16), &[7; 16]);
            arena.dealloc(moved, layout(128, 8));
            let reused = alloc(&arena, 32, 8);
            assert_eq!(reused, moved);
        }
    }

    #[test]
    fn a_shrunk_newest_block_gives_its_space_back_when_freed() {
        let arena = Box::new(Arena::<4096>::new());
        let a = alloc(&arena, 256, 8);
        // SAFETY: `a` is live with layout (256, 8), then (32, 8) after the shrink.
        unsafe {
            assert_eq!(arena.realloc(a, layout(256, 8), 32), a);
            let b = alloc(&arena, 8, 8);
            assert_eq!(b as usize, a as usize + 32, "the tail was given back");
            arena.dealloc(b, layout(8, 8));
            arena.dealloc(a, layout(32, 8));
        }
        assert_eq!(alloc(&arena, 8, 8), a, "the whole block was given back");
    }

    #[test]
    fn system_blocks_are_reallocated_by_the_system() {
        let arena = Box::new(Arena::<4096>::new());
        let big = alloc(&arena, 8000, 8);
        assert!(!arena.contains(big));
        // SAFETY: `big` is live with layout (8000, 8), then (16000, 8).
        unsafe {
            big.write_bytes(5, 8000);
            let bigger = arena.realloc(big, layout(8000, 8), 16000);
            assert!(!arena.contains(bigger));
            assert!(std::slice::from_raw_parts(bigger, 8000)
                .iter()
                .all(|&b| b == 5));
            arena.dealloc(bigger, layout(16000, 8));
        }
    }

    #[test]
    fn zeroed_blocks_are_zero_even_where_a_freed_block_was() {
        let arena = Box::new(Arena::<4096>::new());
        let a = alloc(&arena, 64, 8);
        // SAFETY: `a` is live with layout (64, 8) until freed; `z` is read within its size.
        unsafe {
            a.write_bytes(0xff, 64);
            arena.dealloc(a, layout(64, 8));
            let z = arena.alloc_zeroed(layout(64, 8));
            assert_eq!(z, a);
            assert!(std::slice::from_raw_parts(z, 64).iter().all(|&b| b == 0));
        }
    }

    #[test]
    fn a_growing_large_block_stays_in_place_while_small_blocks_come_between() {
        let arenas = Box::new(Arenas::<{ 16 * 4096 }>::new());
        // SAFETY: every block is live with the layout given until freed; writes stay within.
        unsafe {
            let list = arenas.alloc(layout(2400, 8));
            list.write_bytes(3, 2400);
            let small = arenas.alloc(layout(100, 8));
            assert!(arenas.small.contains(small) && arenas.large.contains(list));
            let grown = arenas.realloc(list, layout(2400, 8), 4800);
            assert_eq!(grown, list, "the newest large block grows in place");
            let grown = arenas.realloc(grown, layout(4800, 8), 9600);
            assert_eq!(grown, list);
            assert!(std::slice::from_raw_parts(grown, 2400)
                .iter()
                .all(|&b| b == 3));
            arenas.dealloc(grown, layout(9600, 8));
            arenas.dealloc(small, layout(100, 8));
        }
    }

    #[test]
    fn a_small_block_that_grows_large_moves_to_the_large_arena_with_its_bytes() {
        let arenas = Box::new(Arenas::<{ 16 * 4096 }>::new());
        // SAFETY: every block is live with the layout given until freed; writes stay within.
        unsafe {
            let block = arenas.alloc(layout(600, 8));
            block.write_bytes(9, 600);
            let moved = arenas.realloc(block, layout(600, 8), 1200);
            assert!(arenas.large.contains(moved));
            assert!(std::slice::from_raw_parts(moved, 600)
                .iter()
                .all(|&b| b == 9));
            assert_eq!(
                arenas.alloc(layout(600, 8)),
                block,
                "the small block was freed, from the top of its arena"
            );
            arenas.dealloc(block, layout(600, 8));
            let shrunk = arenas.realloc(moved, layout(1200, 8), 100);
            assert_eq!(shrunk, moved, "a shrink stays where the block is");
            arenas.dealloc(shrunk, layout(100, 8));
            assert_eq!(arenas.alloc(layout(2000, 8)), moved, "and is freed there");
        }
    }

    #[test]
    fn threads_allocating_and_freeing_at_once_never_share_a_byte() {
        // Each thread fills its live blocks with its own mark and checks it before freeing, so
        // two threads handed overlapping blocks would see each other's writes.
        const THREADS: usize = 4;
        let arena = Box::new(Arena::<{ 64 * 1024 }>::new());
        let start = std::sync::Barrier::new(THREADS);
        std::thread::scope(|scope| {
            for mark in 1..=THREADS as u8 {
                let (arena, start) = (&arena, &start);
                scope.spawn(move || {
                    start.wait();
                    for round in 0..2000 {
                        let size = 16 + (round % 7) * 24;
                        let block = alloc(arena, size, 16);
                        // SAFETY: `block` is live with layout (size, 16) until freed below.
                        unsafe {
                            block.write_bytes(mark, size);
                            std::hint::spin_loop();
                            let bytes = std::slice::from_raw_parts(block, size);
                            assert!(bytes.iter().all(|&b| b == mark), "block shared");
                            arena.dealloc(block, layout(size, 16));
                        }
                    }
                });
            }
        });
    }
}
