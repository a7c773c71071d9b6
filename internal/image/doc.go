// Package image obtains OCI images and turns them into root filesystems:
// references, registries, a content-addressed blob cache, and unpacking.
//
// # References
//
// ParseReference normalises names the way docker does ("alpine" is
// "docker.io/library/alpine:latest") and returns the candidates to try:
// an unqualified name is looked up in each configured Registry in order
// (docker.io when none is configured; "library/" is implied only there),
// a name with a host ("localhost:5000/x", "ghcr.io/x/y") in that registry
// only. "oci:PATH[:TAG]" names an OCI image layout directory (TAG matches
// the org.opencontainers.image.ref.name annotation) and
// "docker-archive:PATH" a "docker save" tarball, for air-gapped hosts.
// Credentials come from the Registry (Username/Password) or else from the
// docker config file (authn.DefaultKeychain). From multi-arch indexes the
// host platform (linux/amd64, linux/arm64) is chosen, or Options.Platform.
//
// # Store
//
// A Store is a cache directory (see Store for its layout). Pull returns a
// cached image without network I/O; otherwise it downloads only the blobs
// it lacks, verifies each against its digest and size into a staging
// directory, and commits them by rename before writing the reference
// record, so a failed or interrupted pull leaves no entry. Pulls of the
// same reference are serialised by an flock(2) lock, across goroutines
// and processes alike, so concurrent pulls download each blob once.
// Remove and Prune delete references and garbage-collect unused blobs
// under an exclusive store lock.
//
// # Unpack
//
// Unpack applies the layers in order into a fresh directory: whiteouts
// (".wh.NAME") and opaque directories (".wh..wh..opq"), regular files,
// directories, symlinks, hard links, FIFOs and device nodes, modes
// including setuid/setgid/sticky, ownership and xattrs. Layer entries are
// untrusted: an absolute path or a ".." element, a hard link whose target
// is outside the root, and any write through a symlink (a path whose
// parent is a symlink, even one pointing inside the root) are refused
// with ErrUnsafeLayer. Symlinks are created but never followed.
//
// Ownership: as root, uid/gid are applied with Lchown. Either way Unpack
// returns an Entry (path, type, mode, uid, gid, device numbers, xattrs)
// for every path of the merged tree, which is what a later ext4 builder
// applies when the tree was unpacked by an unprivileged user (then files
// are owned by that user, directories keep u+rwx and files u+r so the tree
// stays readable and removable, and device nodes are not created).
//
// # Errors
//
// Failures are *Error values carrying the reference, matched with
// errors.Is against the sentinels (ErrImageNotFound, ErrTagNotFound,
// ErrImageUnauthorized, ErrRegistryUnreachable, ErrPlatformNotFound,
// ErrImageCorrupt, ErrUnsafeLayer, ErrInvalidReference), each of which also
// matches errdefs.ErrImage (and errdefs.ErrNotFound for the not-found
// ones).
package image
