//! What the fuzz targets share: a reader that hands out its bytes in pieces as a socket does,
//! and small helpers to draw structured inputs from the fuzzer's bytes.

use std::io::{self, BufRead, Read};

pub use libfuzzer_sys::arbitrary::{Result as DrawResult, Unstructured};

/// Hands out `bytes` in pieces of the given sizes, in turn (as a socket's reads may), then EOF.
pub struct Pieces<'a> {
    bytes: &'a [u8],
    at: usize,
    piece_end: usize,
    sizes: Vec<usize>,
    turn: usize,
}

impl<'a> Pieces<'a> {
    /// Sizes of 0 count as 1.
    pub fn new(bytes: &'a [u8], sizes: &[usize]) -> Pieces<'a> {
        let sizes = if sizes.is_empty() {
            vec![usize::MAX]
        } else {
            sizes.iter().map(|size| (*size).max(1)).collect()
        };
        Pieces {
            bytes,
            at: 0,
            piece_end: 0,
            sizes,
            turn: 0,
        }
    }

    /// What was not read.
    pub fn rest(&self) -> &'a [u8] {
        &self.bytes[self.at..]
    }
}

impl Read for Pieces<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let piece = self.fill_buf()?;
        let len = piece.len().min(buf.len());
        buf[..len].copy_from_slice(&piece[..len]);
        self.consume(len);
        Ok(len)
    }
}

impl BufRead for Pieces<'_> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.at == self.piece_end && self.at < self.bytes.len() {
            let size = self.sizes[self.turn % self.sizes.len()];
            self.turn += 1;
            self.piece_end = self.at.saturating_add(size).min(self.bytes.len());
        }
        Ok(&self.bytes[self.at..self.piece_end])
    }

    fn consume(&mut self, amount: usize) {
        self.at += amount;
    }
}

/// Piece sizes drawn from the input: a few small numbers.
pub fn draw_sizes(u: &mut Unstructured) -> DrawResult<Vec<usize>> {
    let count = u.int_in_range(0..=4)?;
    (0..count)
        .map(|_| u.int_in_range(1..=40usize))
        .collect::<DrawResult<Vec<usize>>>()
}

/// A string of the bytes drawn, each mapped onto `alphabet`.
pub fn draw_from(u: &mut Unstructured, alphabet: &[u8], most: usize) -> DrawResult<String> {
    let len = u.int_in_range(0..=most)?;
    let mut text = String::with_capacity(len);
    for _ in 0..len {
        let index = u.choose_index(alphabet.len())?;
        text.push(char::from(alphabet[index]));
    }
    Ok(text)
}

/// Bytes drawn: a length, then that many bytes (fewer at the end of the input).
pub fn draw_bytes(u: &mut Unstructured, most: usize) -> DrawResult<Vec<u8>> {
    let len = u.int_in_range(0..=most)?;
    let mut bytes = Vec::with_capacity(len);
    for _ in 0..len {
        if u.is_empty() {
            break;
        }
        bytes.push(u.arbitrary::<u8>()?);
    }
    Ok(bytes)
}

/// The bytes a valid variable name may hold, the first of them first.
pub const NAME_FIRST: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_";
pub const NAME_REST: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_0123456789";

/// A valid variable name.
pub fn draw_name(u: &mut Unstructured) -> DrawResult<String> {
    let first = NAME_FIRST[u.choose_index(NAME_FIRST.len())?];
    let rest = draw_from(u, NAME_REST, 12)?;
    Ok(format!("{}{rest}", char::from(first)))
}

/// The bytes of a key segment.
pub const KEY_BYTES: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-";

/// A valid key: one to eight segments, some of them long.
pub fn draw_key(u: &mut Unstructured) -> DrawResult<String> {
    let segments = u.int_in_range(1..=8)?;
    let mut key = String::new();
    for index in 0..segments {
        if index > 0 {
            key.push('/');
        }
        let most = if u.ratio(1, 4)? { 200 } else { 12 };
        let mut segment = draw_from(u, KEY_BYTES, most)?;
        if segment.is_empty() || segment == "." || segment == ".." {
            segment.push('k');
        }
        key.push_str(&segment);
    }
    key.truncate(512);
    while key.ends_with('/') {
        key.pop();
    }
    Ok(key)
}
