//! The daemon's own memory footprint (one-shot commands keep the defaults): one malloc
//! arena, the kernel's fault-around kept from mapping code the daemon does not run, and
//! the startup code's pages released once the daemon has settled.

use std::time::Duration;

/// When [`release_startup_code`] runs after `READY=1`: every detector has made its first
/// pass (the longest default first pass, a kube or containerd connect, takes seconds).
pub(crate) const RELEASE_STARTUP_CODE_AFTER: Duration = Duration::from_secs(20);

/// One malloc arena for every thread, and fixed 128 KiB mmap and trim thresholds.
///
/// glibc gives each thread that allocates an arena of its own (up to 8 per core) and
/// memory freed in one arena is never reused by another, so a dozen threads that each
/// allocate a little now and then hold a little each: one arena measured -0.75 MiB of idle
/// RSS on a server scraping etcd (its detector and scrape threads each held ~0.5-1 MiB).
/// The daemon allocates rarely and seldom from two threads at once, so the shared arena's
/// lock costs nothing measurable. glibc also raises its mmap threshold each time a large
/// block is freed, after which etcd's 100-300 KB metrics page and its copies are carved
/// from the heap and fragment it; fixed thresholds keep such blocks in mmap, returned
/// whole when freed: -0.4 MiB more on the etcd server (BENCHMARKS.md, "Idle RSS").
pub(crate) fn tune_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    for (param, value, name) in [
        (libc::M_ARENA_MAX, 1, "M_ARENA_MAX"),
        (libc::M_MMAP_THRESHOLD, 128 << 10, "M_MMAP_THRESHOLD"),
        (libc::M_TRIM_THRESHOLD, 128 << 10, "M_TRIM_THRESHOLD"),
    ] {
        // SAFETY: mallopt only changes a malloc parameter; it is called before the
        // daemon's threads start.
        if unsafe { libc::mallopt(param, value) } != 1 {
            log::debug!("mallopt({name}, {value}) refused: glibc's default kept");
        }
    }
}

/// A loaded segment of the executable: (start, end) in memory, writable, in PT_GNU_RELRO.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Segment {
    pub(crate) start: usize,
    pub(crate) end: usize,
    pub(crate) writable: bool,
}

/// The page-aligned ranges of the executable's segments whose pages are file pages never
/// written: neither writable nor overlapping `relro` (relocated at start, so copies, not
/// the file). Rounded inwards so no page shared with another segment is included.
pub(crate) fn clean_ranges(
    segments: &[Segment],
    relro: &[(usize, usize)],
    page: usize,
) -> Vec<(usize, usize)> {
    segments
        .iter()
        .filter(|s| !s.writable)
        .filter(|s| relro.iter().all(|&(a, b)| b <= s.start || a >= s.end))
        .filter_map(|s| {
            let start = s.start.div_ceil(page) * page;
            let end = s.end / page * page;
            (start < end).then_some((start, end))
        })
        .collect()
}

/// How much of the executable's code one page fault may map: the size of the small
/// mappings [`bound_fault_around`] cuts the code into (or the page, if larger: 16 KiB on
/// the Raspberry Pi 5's kernel, 64 KiB on some arm64 kernels).
const FAULT_AROUND_CHUNK: usize = 4 << 10;

/// Every other `chunk` of each range: the ones to set apart with a different VMA flag so
/// that the kernel cannot merge them with their neighbours. The first chunk of each range
/// keeps its flags (the first range's holds the ELF header, which core dumps keep).
pub(crate) fn alternate_chunks(ranges: &[(usize, usize)], chunk: usize) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    for &(start, end) in ranges {
        let mut at = start + chunk;
        while at < end {
            out.push((at, (at + chunk).min(end)));
            at += 2 * chunk;
        }
    }
    out
}

/// Cuts the executable's read-only file mappings into [`FAULT_AROUND_CHUNK`] mappings
/// (VMAs), so that a fault maps at most that much code instead of 64 KiB.
///
/// On a page fault in a file mapping the kernel maps up to `fault_around_bytes` (64 KiB,
/// a debugfs knob) of neighbouring cached pages too, clamped to the VMA. The idle loops
/// run ~2 MiB of the binary's code, spread over 9 MiB of text, so fault-around kept 6.6
/// MiB of it mapped (smaps `Referenced:` 2.0 MiB of `Rss:` 6.6 MiB over two minutes after
/// `clear_refs`, k3s probes on and scraped; BENCHMARKS.md, "Stop 30"). Alternate
/// chunks get `MADV_DONTDUMP`, which changes nothing else here (core dumps leave
/// file-backed code out by default, `coredump_filter` 0x33) but gives them other flags
/// than their neighbours, so the kernel keeps them as separate VMAs. The kernel pays one
/// `vm_area_struct` (192 B) per chunk: ~0.55 MiB of slab for 4 KiB chunks, against 5 MiB
/// less mapped (16 KiB chunks: 0.14 MiB for 3.3 MiB). The code is the same page cache
/// either way; unmapped, what the daemon does not run is ordinary cache the kernel can
/// reclaim, where mapped executable pages are kept longest.
pub(crate) fn bound_fault_around() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let (ranges, page) = clean_code();
        let chunk = FAULT_AROUND_CHUNK.max(page);
        let mut cut = 0;
        for (start, end) in alternate_chunks(&ranges, chunk) {
            // SAFETY: a page-aligned range inside a read-only file mapping of the
            // executable; MADV_DONTDUMP only sets a VMA flag (and splits the VMA).
            let rc = unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTDUMP)
            };
            if rc != 0 {
                log::debug!(
                    "madvise(MADV_DONTDUMP) on the executable failed: {}; fault-around left whole",
                    std::io::Error::last_os_error()
                );
                return;
            }
            cut += 1;
        }
        log::debug!(
            "executable code cut into {} KiB mappings ({cut} set apart)",
            chunk >> 10
        );
    }
}

/// The executable's never-written file pages ([`clean_ranges`]), and the page size.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn clean_code() -> (Vec<(usize, usize)>, usize) {
    let (segments, relro) = executable_segments();
    // SAFETY: sysconf has no preconditions.
    let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
    (clean_ranges(&segments, &relro, page), page)
}

/// Unmaps the executable's read-only file pages (code, constants, unwind tables) from this
/// process; the ones still in use fault back in from the page cache (a minor fault). The
/// kernel maps 64 KiB around every page fault (`fault_around_bytes`), so the code run once
/// at start (argument and config parsing, client setup, each detector's first pass) stays
/// mapped and counted in RSS for the life of the process: 6.0 of the binary's 7.8 MiB of
/// code were mapped at idle, 5.1 MiB once released and the idle loops' code back in
/// (x86_64, a node without k3s; BENCHMARKS.md, "Idle RSS"). Mapped
/// executable pages are also the ones the kernel keeps longest under memory pressure;
/// released, the unused ones are ordinary page cache. Lossless: these pages were never
/// written (writable and RELRO segments, which the loader relocated, are left alone), so
/// the page cache holds exactly what was mapped.
pub(crate) fn release_startup_code() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let mut released = 0;
        for (start, end) in clean_code().0 {
            // SAFETY: a page-aligned range inside a read-only, never-written file mapping
            // of the executable: MADV_DONTNEED only drops the page table entries, and the
            // next access maps the same file page again.
            let rc = unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED)
            };
            if rc == 0 {
                released += end - start;
            } else {
                log::debug!(
                    "madvise(MADV_DONTNEED) on the executable failed: {}",
                    std::io::Error::last_os_error()
                );
            }
        }
        log::debug!(
            "released the mappings of {} KiB of startup code and constants",
            released / 1024
        );
    }
}

/// The main executable's PT_LOAD segments and PT_GNU_RELRO ranges, from the loader.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn executable_segments() -> (Vec<Segment>, Vec<(usize, usize)>) {
    type Found = (Vec<Segment>, Vec<(usize, usize)>);
    unsafe extern "C" fn first(
        info: *mut libc::dl_phdr_info,
        _size: libc::size_t,
        data: *mut libc::c_void,
    ) -> libc::c_int {
        // SAFETY: the loader passes a valid dl_phdr_info; `data` is the `Found` below.
        let (info, found) = unsafe { (&*info, &mut *(data as *mut Found)) };
        for i in 0..usize::from(info.dlpi_phnum) {
            // SAFETY: dlpi_phdr has dlpi_phnum entries.
            let ph = unsafe { &*info.dlpi_phdr.add(i) };
            let start = info.dlpi_addr as usize + ph.p_vaddr as usize;
            let end = start + ph.p_memsz as usize;
            match ph.p_type {
                libc::PT_LOAD => found.0.push(Segment {
                    start,
                    end,
                    writable: ph.p_flags & libc::PF_W != 0,
                }),
                libc::PT_GNU_RELRO => found.1.push((start, end)),
                _ => {}
            }
        }
        // The first object is the executable: stop there.
        1
    }
    let mut found: Found = (Vec::new(), Vec::new());
    // SAFETY: the callback only reads the loader's headers and writes to `found`.
    unsafe { libc::dl_iterate_phdr(Some(first), &mut found as *mut Found as *mut libc::c_void) };
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(start: usize, end: usize, writable: bool) -> Segment {
        Segment {
            start,
            end,
            writable,
        }
    }

    #[test]
    fn only_read_only_segments_outside_relro_are_released_rounded_inwards() {
        let segs = [
            seg(0, 0x2_6712, false),          // headers, .rodata, .eh_frame
            seg(0x2_6814, 0x8c_c760, false),  // .text
            seg(0x8c_e760, 0x92_2000, false), // RELRO: relocated at start
            seg(0x92_2dc0, 0x92_5e60, true),  // .data, .bss
        ];
        let relro = [(0x8c_e760, 0x92_2000)];
        assert_eq!(
            clean_ranges(&segs, &relro, 0x1000),
            vec![(0, 0x2_6000), (0x2_7000, 0x8c_c000)]
        );
    }

    #[test]
    fn every_other_chunk_is_set_apart_and_the_first_keeps_its_flags() {
        let k = 0x1000;
        assert_eq!(
            alternate_chunks(&[(0, 5 * k), (0x10_0000, 0x10_0000 + 2 * k)], k),
            vec![
                (k, 2 * k),
                (3 * k, 4 * k),
                (0x10_0000 + k, 0x10_0000 + 2 * k)
            ]
        );
        // A range ending mid-chunk: the last piece is cut at its end.
        assert_eq!(alternate_chunks(&[(0, 0x1800)], k), vec![(k, 0x1800)]);
        assert!(alternate_chunks(&[(0, k)], k).is_empty());
    }

    /// The mappings of this process's executable in /proc/self/maps.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn executable_mappings() -> usize {
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let exe = exe.to_str().unwrap();
        std::fs::read_to_string("/proc/self/maps")
            .unwrap()
            .lines()
            .filter(|l| l.ends_with(exe))
            .count()
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn the_test_binary_is_cut_into_small_mappings_and_still_runs() {
        let (ranges, page) = clean_code();
        let apart = alternate_chunks(&ranges, FAULT_AROUND_CHUNK.max(page)).len();
        assert!(apart > 100, "a test binary has megabytes of code: {apart}");
        let before = executable_mappings();
        bound_fault_around();
        let after = executable_mappings();
        // Each chunk set apart is a mapping of its own, and so is what follows it.
        assert!(
            after >= before + 2 * apart - 2,
            "{before} mappings before, {after} after, {apart} chunks set apart"
        );
        release_startup_code();
        assert_eq!(format!("{}", 6 * 7), "42");
    }

    #[test]
    fn a_segment_smaller_than_a_page_is_left_alone() {
        assert!(clean_ranges(&[seg(0x1010, 0x1ff0, false)], &[], 0x1000).is_empty());
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn the_test_binary_finds_its_code_and_survives_the_release() {
        let (segs, _) = executable_segments();
        let here = the_test_binary_finds_its_code_and_survives_the_release as *const () as usize;
        assert!(
            segs.iter()
                .any(|s| !s.writable && s.start <= here && here < s.end),
            "{segs:x?}"
        );
        release_startup_code();
        // Code and constants fault back in.
        assert_eq!(format!("{}", 6 * 7), "42");
    }
}
