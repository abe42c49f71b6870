//! The blob store's unit tests: writing, reading, pieces, residents, pins and the cap,
//! for blobs in files of their own and for small blobs packed in segments.

use super::*;

/// A store that keeps every blob in a file of its own, whatever its size: for the tests
/// of the files, with blobs small enough to count by hand.
fn files_only(dir: &Path, cap: u64) -> BlobStore {
    BlobStore::open_packing(dir, cap, 0).unwrap()
}

fn pack_files(dir: &Path) -> Vec<PathBuf> {
    let mut packs: Vec<PathBuf> = fs::read_dir(dir.join("blobs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "pack"))
        .collect();
    packs.sort();
    packs
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("idlegrid-store-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    dir
}

#[test]
fn resident_blobs_are_read_from_memory_until_their_set_is_dropped() {
    let dir = temp_dir("resident");
    let store = BlobStore::open(&dir, 1 << 20).unwrap();
    let bytes: Vec<u8> = (0..3000u32).map(|i| (i * 7) as u8).collect();
    let mut set = Resident::new(&store);
    let cid = store.put_resident(bytes.clone(), &mut set).unwrap();
    assert_eq!(set.bytes(), 3000);
    // A second job holding the same blob keeps it resident after the first ends.
    let mut other = Resident::new(&store);
    assert_eq!(store.put_resident(bytes.clone(), &mut other).unwrap(), cid);
    let piece = |store: &BlobStore| store.read_piece(&cid, 2990, 100).unwrap().unwrap();
    for _ in 0..2 {
        let shared = store.get(&cid).unwrap().unwrap();
        assert_eq!(&shared[..], &bytes[..]);
        assert_eq!(
            shared.as_ptr(),
            store.get(&cid).unwrap().unwrap().as_ptr(),
            "a resident blob is shared from memory, not read from its file"
        );
        assert_eq!(
            piece(&store),
            (3000, Bytes::copy_from_slice(&bytes[2990..]))
        );
        assert_eq!(
            store.read_piece(&cid, 5000, 10).unwrap().unwrap(),
            (3000, Bytes::new())
        );
        drop(std::mem::replace(&mut set, Resident::new(&store)));
    }
    drop(other);
    // Gone from memory, still in the store (its file was written all along).
    let read = store.get(&cid).unwrap().unwrap();
    assert_eq!(read, bytes);
    assert_ne!(
        read.as_ptr(),
        store.get(&cid).unwrap().unwrap().as_ptr(),
        "read from its file once it left memory"
    );
    assert_eq!(
        piece(&store),
        (3000, Bytes::copy_from_slice(&bytes[2990..]))
    );
    assert_eq!(
        BlobStore::open(&dir, 1 << 20).unwrap().get(&cid).unwrap(),
        Some(Bytes::from(bytes))
    );
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn put_get_piece_and_reopen() {
    let dir = temp_dir("basic");
    let store = BlobStore::open(&dir, 1 << 20).unwrap();
    let bytes: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
    let cid = store.put(&bytes).unwrap();
    assert_eq!(store.get(&cid).unwrap().unwrap(), bytes);
    let (total, piece) = store.read_piece(&cid, 990, 100).unwrap().unwrap();
    assert_eq!((total, &piece[..]), (1000, &bytes[990..]));
    let reopened = BlobStore::open(&dir, 1 << 20).unwrap();
    assert_eq!(reopened.len_of(&cid), Some(1000));
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn wrong_bytes_are_refused() {
    let dir = temp_dir("verify");
    let store = BlobStore::open(&dir, 1 << 20).unwrap();
    let err = store.put_verified(Cid::of(b"a"), b"b").unwrap_err();
    assert!(matches!(err, StoreError::HashMismatch { .. }));
    assert!(!store.has(&Cid::of(b"b")));
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn pieces_are_written_verified_and_leave_nothing_when_wrong() {
    let dir = temp_dir("writer");
    let store = BlobStore::open(&dir, 1 << 20).unwrap();
    let bytes: Vec<u8> = (0..3000u32).map(|i| (i * 7) as u8).collect();
    let cid = Cid::of(&bytes);
    let mut w = store.writer(cid, 3000).unwrap();
    for piece in bytes.chunks(1024) {
        w.write(piece).unwrap();
    }
    assert!(!store.has(&cid), "not visible before finish");
    w.finish().unwrap();
    assert_eq!(store.get(&cid).unwrap().unwrap(), bytes);

    // Wrong bytes, too many bytes, too few: refused, no blob, no temp file left.
    let other = Cid::of(b"other");
    let mut w = store.writer(other, 3000).unwrap();
    w.write(&bytes).unwrap();
    assert!(matches!(w.finish(), Err(StoreError::HashMismatch { .. })));
    let mut w = store.writer(other, 10).unwrap();
    assert!(matches!(w.write(&bytes), Err(StoreError::Length { .. })));
    drop(w);
    let mut w = store.writer(other, 3000).unwrap();
    w.write(&bytes[..10]).unwrap();
    assert!(matches!(w.finish(), Err(StoreError::Length { .. })));
    assert!(!store.has(&other));
    let names: Vec<_> = fs::read_dir(dir.join("blobs"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "only the good blob: {names:?}");
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn cap_evicts_oldest_unpinned() {
    let dir = temp_dir("cap");
    let store = files_only(&dir, 250);
    let a = store.put(&[1u8; 100]).unwrap();
    let b = store.put(&[2u8; 100]).unwrap();
    let job_a = store.pin([a]);
    let c = store.put(&[3u8; 100]).unwrap();
    assert!(store.has(&a) && !store.has(&b) && store.has(&c));
    // Two jobs pin c: it stays pinned until both let go.
    let (job_c, other_job_c) = (store.pin([c]), store.pin([c]));
    assert!(matches!(
        store.put(&[4u8; 100]),
        Err(StoreError::Full { .. })
    ));
    drop(job_c);
    assert!(store.is_pinned(&c));
    assert!(matches!(
        store.put(&[4u8; 100]),
        Err(StoreError::Full { .. })
    ));
    drop(other_job_c);
    assert!(!store.is_pinned(&c));
    let d = store.put(&[4u8; 100]).unwrap();
    assert!(store.has(&a) && !store.has(&c) && store.has(&d));
    drop(job_a);
    let _ = fs::remove_dir_all(&dir);
}

/// Blobs arriving at once reserve their sizes: together they never pass the cap, a
/// blob that finds no room is refused, and a writer dropped unfinished gives its room
/// back.
#[test]
fn blobs_arriving_at_once_reserve_their_room_within_the_cap() {
    let dir = temp_dir("reserve");
    let store = files_only(&dir, 3000);
    let blob = |seed: u8| vec![seed; 1200];
    let (a, b, c) = (blob(1), blob(2), blob(3));
    let mut first = store.writer(Cid::of(&a), 1200).unwrap();
    let second = store.writer(Cid::of(&b), 1200).unwrap();
    assert_eq!(store.usage(), (0, 2400));
    match store.writer(Cid::of(&c), 1200) {
        Err(StoreError::Full { reserved, .. }) => assert_eq!(reserved, 2400),
        Err(other) => panic!("expected the store to be full, got {other}"),
        Ok(_) => panic!("a third blob passed the cap"),
    }
    assert!(
        store.put(&c).is_err(),
        "a whole blob is held to the same cap"
    );
    first.write(&a).unwrap();
    first.finish().unwrap();
    assert_eq!(
        store.usage(),
        (1200, 1200),
        "the reservation became the blob"
    );
    drop(second);
    assert_eq!(
        store.usage(),
        (1200, 0),
        "a dropped writer gives its room back"
    );
    let mut third = store.writer(Cid::of(&c), 1200).unwrap();
    third.write(&c).unwrap();
    third.finish().unwrap();
    assert_eq!(store.usage(), (2400, 0));
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn small_blobs_share_a_pack_segment_and_survive_a_reopen() {
    let dir = temp_dir("packed");
    let store = BlobStore::open(&dir, 1 << 30).unwrap();
    let blobs: Vec<Vec<u8>> = (0..2000u32).map(|i| i.to_le_bytes().repeat(8)).collect();
    let cids: Vec<Cid> = blobs.iter().map(|b| store.put(b).unwrap()).collect();
    // A large blob still gets a file of its own.
    let large = vec![7u8; PACKED_MAX as usize + 1];
    let large_cid = store.put(&large).unwrap();
    let names = fs::read_dir(dir.join("blobs")).unwrap().count();
    assert_eq!(names, 2, "one segment and one file, not a file per blob");
    assert_eq!(
        store.usage().0,
        2000 * pack::footprint(32) + large.len() as u64
    );
    let (total, piece) = store.read_piece(&cids[5], 30, 100).unwrap().unwrap();
    assert_eq!((total, &piece[..]), (32, &blobs[5][30..]));
    let reopened = BlobStore::open(&dir, 1 << 30).unwrap();
    for (cid, bytes) in cids.iter().zip(&blobs) {
        assert_eq!(reopened.get(cid).unwrap().unwrap(), bytes);
    }
    assert_eq!(reopened.get(&large_cid).unwrap().unwrap(), large);
    assert_eq!(reopened.usage(), store.usage());
    // Stored twice, held once.
    reopened.put(&blobs[0]).unwrap();
    assert_eq!(reopened.usage(), store.usage());
    let _ = fs::remove_dir_all(&dir);
}

/// A crash mid-append leaves a torn record at a segment's end, and a damaged disk a
/// record whose bytes no longer hash to its id: neither is ever served, the torn tail is
/// cut off, and the records around them are kept.
#[test]
fn torn_and_damaged_records_are_never_served() {
    let dir = temp_dir("torn");
    let store = BlobStore::open(&dir, 1 << 30).unwrap();
    let [a, b, c] = [b"first blob", b"damaged b!", b"third blob"].map(|b| store.put(b).unwrap());
    drop(store);
    let segment = pack_files(&dir).remove(0);
    let mut bytes = fs::read(&segment).unwrap();
    let whole = bytes.len();
    // Damage b's bytes (the second record), and tear a fourth record half-way.
    let b_bytes = pack::footprint(10) as usize + pack::RECORD_HEADER as usize;
    bytes[b_bytes] ^= 0xff;
    bytes.extend_from_slice(&Cid::of(b"torn").0);
    bytes.extend_from_slice(&100u32.to_le_bytes());
    bytes.extend_from_slice(b"only part of it");
    fs::write(&segment, &bytes).unwrap();

    let store = BlobStore::open(&dir, 1 << 30).unwrap();
    assert_eq!(
        fs::metadata(&segment).unwrap().len() as usize,
        whole,
        "the torn tail is cut off"
    );
    assert_eq!(store.get(&a).unwrap().unwrap(), &b"first blob"[..]);
    assert_eq!(
        store.get(&b).unwrap(),
        None,
        "a damaged record is not served"
    );
    assert!(!store.has(&b));
    assert_eq!(store.get(&c).unwrap().unwrap(), &b"third blob"[..]);
    // New blobs are stored and read back after another open.
    let d = store.put(b"after the tear").unwrap();
    let store = BlobStore::open(&dir, 1 << 30).unwrap();
    assert_eq!(store.get(&d).unwrap().unwrap(), &b"after the tear"[..]);
    assert_eq!(store.get(&c).unwrap().unwrap(), &b"third blob"[..]);

    // Damage found at a read (after the open checked it) drops the blob too.
    let segment = pack_files(&dir).pop().unwrap();
    let mut bytes = fs::read(&segment).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    fs::write(&segment, &bytes).unwrap();
    assert_eq!(store.get(&d).unwrap(), None);
    assert!(!store.has(&d));
    let _ = fs::remove_dir_all(&dir);
}

/// Packed blobs are held to the cap like files: the oldest unpinned are evicted, their
/// segments deleted or compacted so that the disk use never passes the cap, and the
/// pinned ones survive the moves, readable at their new place and after a reopen.
#[test]
fn packed_blobs_are_held_to_the_cap() {
    let dir = temp_dir("packcap");
    let cap = 1 << 20;
    let store = BlobStore::open(&dir, cap).unwrap();
    let blob = |i: u32| -> Vec<u8> { i.to_le_bytes().repeat(1000) };
    let mut kept = Vec::new();
    let mut pins = Vec::new();
    for i in 0..2000u32 {
        let cid = store.put(&blob(i)).unwrap();
        if i % 97 == 0 {
            pins.push(store.pin([cid]));
            kept.push((cid, blob(i)));
        }
        let on_disk: u64 = pack_files(&dir)
            .iter()
            .map(|p| fs::metadata(p).unwrap().len())
            .sum();
        assert!(
            on_disk <= cap,
            "{on_disk} bytes of segments after blob {i}, cap {cap}"
        );
        assert_eq!(store.usage().0, on_disk);
    }
    for (cid, bytes) in &kept {
        assert_eq!(
            store.get(cid).unwrap().unwrap(),
            bytes,
            "a pinned blob survived"
        );
    }
    let last = store.put(&blob(5000)).unwrap();
    let reopened = BlobStore::open(&dir, cap).unwrap();
    for (cid, bytes) in &kept {
        assert_eq!(reopened.get(cid).unwrap().unwrap(), bytes);
    }
    assert_eq!(reopened.get(&last).unwrap().unwrap(), blob(5000));
    assert!(reopened.usage().0 <= cap);
    drop(pins);
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn a_small_blob_arriving_in_pieces_is_packed() {
    let dir = temp_dir("packwriter");
    let store = BlobStore::open(&dir, 1 << 20).unwrap();
    let bytes: Vec<u8> = (0..3000u32).map(|i| (i * 7) as u8).collect();
    let cid = Cid::of(&bytes);
    let mut w = store.writer(cid, 3000).unwrap();
    assert_eq!(store.usage(), (0, pack::footprint(3000)));
    for piece in bytes.chunks(1024) {
        w.write(piece).unwrap();
    }
    w.finish().unwrap();
    assert_eq!(store.usage(), (pack::footprint(3000), 0));
    assert_eq!(store.get(&cid).unwrap().unwrap(), bytes);
    // A wrong one leaves nothing behind and gives its room back.
    let mut w = store.writer(Cid::of(b"other"), 3000).unwrap();
    w.write(&bytes).unwrap();
    assert!(matches!(w.finish(), Err(StoreError::HashMismatch { .. })));
    assert_eq!(store.usage(), (pack::footprint(3000), 0));
    let names = fs::read_dir(dir.join("blobs")).unwrap().count();
    assert_eq!(names, 1, "the segment only");
    let _ = fs::remove_dir_all(&dir);
}
