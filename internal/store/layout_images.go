package store

import (
	"path/filepath"
	"strings"
)

// Image cache names:
//
//	<home>/images/                 the OCI blob cache (package image owns its inside)
//	<home>/bases/<hex>.ext4        read-only root disk of one image, by manifest digest
//	<home>/tmp/                    scratch space: image unpacking, temporary disks

// ImagesDir is the OCI image cache.
func (l Layout) ImagesDir() string { return filepath.Join(l.Home, "images") }

// BasesDir holds the ext4 base disks of images.
func (l Layout) BasesDir() string { return filepath.Join(l.Home, "bases") }

// ImageBase is the base disk of the image with this manifest digest
// ("sha256:<hex>").
func (l Layout) ImageBase(digest string) string {
	return filepath.Join(l.BasesDir(), strings.TrimPrefix(digest, "sha256:")+".ext4")
}

// TmpDir is scratch space on the same filesystem as the home dir, so
// finished files can be renamed into place.
func (l Layout) TmpDir() string { return filepath.Join(l.Home, "tmp") }

// LayersDir holds read-only disk layers that boxes share: the ext4 base of
// a box made from a rootfs directory, and overlays frozen by a clone. A
// layer is deleted when no box's chain uses it any more.
func (l Layout) LayersDir() string { return filepath.Join(l.Home, "layers") }

// Layer is the path of the layer file name in LayersDir.
func (l Layout) Layer(name string) string { return filepath.Join(l.LayersDir(), name) }
