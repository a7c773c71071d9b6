// Package archive reads and writes .boxlite archives, the file format of an
// exported box.
//
// # Format, version 2
//
// A .boxlite file is a Zstandard stream (RFC 8878: one or more frames; Write
// emits one frame with a content checksum and an 8 MiB window; readers
// accept windows up to 64 MiB and no dictionaries) whose decompressed bytes
// are a POSIX tar stream (ustar headers, with pax extended headers where a
// value does not fit, e.g. a size of 8 GiB or more). Nothing may follow the
// Zstandard stream.
//
// The tar stream holds, in this order and nothing else:
//
//  1. manifest.json, the manifest described below, at most 1 MiB.
//  2. One entry per member, in the order of the manifest's members list.
//  3. checksums.json, the sha256 of each member, at most 1 MiB.
//  4. The end-of-archive marker (two 512-byte zero blocks), optionally
//     followed by at most 1 MiB of zero bytes (record padding).
//
// The sums come after the members so that a writer can compute them while
// it stores the members, reading each once; the sizes, known beforehand,
// stay in the manifest so that a reader can check them against its limits
// and its free space before it writes anything.
//
// Every entry is a regular file (typeflag '0'): no directories, links,
// devices, fifos or sparse entries. Its name is the member name itself, with
// no directory part and no "./" prefix; its size is the member's size. The
// mode, owner and times of an entry carry no meaning (Write stores 0644,
// uid 0, gid 0 and the manifest's created_at).
//
// A member name is 1 to 128 bytes of ASCII letters, digits, '.', '_' and
// '-', does not start with '.', and is neither "manifest.json" nor
// "checksums.json".
//
// The manifest is a UTF-8 JSON object with exactly these keys, all
// required:
//
//	{
//	  "format_version": 2,
//	  "created_at": "2025-01-02T03:04:05Z",  // RFC 3339 (comments are not part of the format)
//	  "box": {...},                          // box options, any JSON value
//	  "image": "docker.io/library/alpine:3", // image reference
//	  "members": [
//	    {"name": "disk.qcow2", "size": 1073741824}
//	  ]
//	}
//
// checksums.json is a UTF-8 JSON object with exactly one key, listing every
// member of the manifest, in the same order, with the lower-case hex sha256
// of its bytes:
//
//	{"members": [{"name": "disk.qcow2", "sha256": "<64 lower-case hex>"}]}
//
// Member names in the manifest are unique. A reader refuses an archive with
// an unknown format_version, an unknown or missing key, or any deviation
// from the above: a member missing, repeated, out of order or not listed, a
// size that does not match, checksums.json missing, repeated, not last, not
// listing exactly the members in order, or with a sha256 that does not
// match, a truncated or corrupted stream. A later version that changes any
// of this, or adds a key, has a new format_version.
//
// Version 1 (sha256s in the manifest, no checksums.json) was never
// released; this package refuses it as an unsupported version.
//
// BoxLite stores one member: disk.qcow2, the box's disk flattened into a
// standalone qcow2 image (no backing file). The meaning of box and image is
// defined by the boxlite package, not here.
//
// # Reading
//
// Read hashes as it extracts, checks checksums.json once every member is
// written, and removes what it extracted on any error, so the caller
// creates nothing from an archive until Read has returned successfully. Sizes claimed by the manifest are checked against Limits
// and against the destination's free space before anything is written.
package archive
