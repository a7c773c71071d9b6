package boxlite

import (
	"archive/tar"
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/boxlite-go/boxlite/internal/disk"
	"github.com/boxlite-go/boxlite/internal/image"
)

// ImageInfo describes a pulled image.
type ImageInfo struct {
	// Ref is the canonical reference, e.g. docker.io/library/alpine:latest.
	Ref string
	// Digest is the manifest digest, "sha256:...".
	Digest   string
	Platform string
	// Size is the compressed size of the layers.
	Size   int64
	Pulled time.Time
	// Entrypoint, Cmd, Env, WorkingDir and User come from the image
	// config and are the defaults of boxes made from it.
	Entrypoint []string
	Cmd        []string
	Env        []string
	WorkingDir string
	User       string
}

// PullProgress reports the download of one layer.
type PullProgress struct {
	Ref      string
	Digest   string
	Complete int64
	Total    int64
	Cached   bool
}

func imageInfo(img *image.Image) ImageInfo {
	info := ImageInfo{
		Ref:        img.Ref,
		Digest:     img.Digest,
		Platform:   img.Platform,
		Pulled:     img.Pulled,
		Entrypoint: img.Config.Entrypoint,
		Cmd:        img.Config.Cmd,
		Env:        img.Config.Env,
		WorkingDir: img.Config.WorkingDir,
		User:       img.Config.User,
	}
	for _, l := range img.Layers {
		info.Size += l.Size
	}
	return info
}

func (rt *Runtime) imageStore() (*image.Store, error) {
	rt.imagesOnce.Do(func() {
		regs := make([]image.Registry, len(rt.opts.ImageRegistries))
		for i, r := range rt.opts.ImageRegistries {
			regs[i] = image.Registry(r)
		}
		rt.images, rt.imagesErr = image.Open(rt.layout.ImagesDir(), image.Options{Registries: regs, Logger: rt.log})
	})
	return rt.images, rt.imagesErr
}

// PullImage fetches an image (unless cached) from the configured
// registries, a local OCI layout ("oci:PATH[:TAG]") or a docker-archive
// tarball ("docker-archive:PATH"). progress may be nil.
func (rt *Runtime) PullImage(ctx context.Context, ref string, progress func(PullProgress)) (ImageInfo, error) {
	img, err := rt.pull(ctx, ref, progress)
	if err != nil {
		return ImageInfo{}, err
	}
	return imageInfo(img), nil
}

func (rt *Runtime) pull(ctx context.Context, ref string, progress func(PullProgress)) (*image.Image, error) {
	st, err := rt.imageStore()
	if err != nil {
		return nil, err
	}
	var report func(image.Progress)
	if progress != nil {
		report = func(p image.Progress) { progress(PullProgress(p)) }
	}
	return st.Pull(ctx, ref, report)
}

// Images lists the pulled images.
func (rt *Runtime) Images(ctx context.Context) ([]ImageInfo, error) {
	st, err := rt.imageStore()
	if err != nil {
		return nil, err
	}
	imgs, err := st.List(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]ImageInfo, len(imgs))
	for i, img := range imgs {
		out[i] = imageInfo(img)
	}
	return out, nil
}

// RemoveImage forgets an image and deletes the blobs only it used. Boxes
// created from it keep working: their root disk is their own overlay on
// the image's base disk, which is kept.
func (rt *Runtime) RemoveImage(ctx context.Context, ref string) error {
	st, err := rt.imageStore()
	if err != nil {
		return err
	}
	return st.Remove(ctx, ref)
}

// imageBase pulls ref and returns the image and its read-only ext4 base
// disk, building the disk on first use (once per image digest).
func (rt *Runtime) imageBase(ctx context.Context, ref string) (*image.Image, string, error) {
	img, err := rt.pull(ctx, ref, nil)
	if err != nil {
		return nil, "", err
	}
	base := rt.layout.ImageBase(img.Digest)
	if _, err := os.Stat(base); err == nil {
		return img, base, nil
	}
	for _, d := range []string{rt.layout.BasesDir(), rt.layout.TmpDir()} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, "", err
		}
	}
	work, err := os.MkdirTemp(rt.layout.TmpDir(), "unpack-")
	if err != nil {
		return nil, "", err
	}
	defer os.RemoveAll(work)
	root := work + "/root"
	entries, err := image.Unpack(ctx, img, root)
	if err != nil {
		return nil, "", err
	}
	// The tree on disk has the image's owners only when unpacked as root;
	// the base gets them (and the device nodes) from entries either way.
	if err := disk.BaseFromTree(ctx, root, base, int64(DefaultDiskSizeGB)<<30, owners(root, entries)); err != nil {
		return nil, "", fmt.Errorf("image %q: %w", img.Ref, err)
	}
	return img, base, nil
}

// owners converts the entries unpacked into root to the metadata the
// base disk must have: the root directory belongs to root, with the
// permissions the unpack gave it. Hard links share their source's inode,
// whose entry covers them.
func owners(root string, entries []image.Entry) []disk.Owner {
	out := make([]disk.Owner, 0, len(entries)+1)
	if fi, err := os.Stat(root); err == nil {
		out = append(out, disk.Owner{Path: "", Mode: fs.ModeDir | fi.Mode().Perm()})
	}
	for _, e := range entries {
		var typ fs.FileMode
		switch e.Type {
		case tar.TypeReg:
		case tar.TypeDir:
			typ = fs.ModeDir
		case tar.TypeSymlink:
			typ = fs.ModeSymlink
		case tar.TypeChar:
			typ = fs.ModeDevice | fs.ModeCharDevice
		case tar.TypeBlock:
			typ = fs.ModeDevice
		case tar.TypeFifo:
			typ = fs.ModeNamedPipe
		default:
			continue
		}
		out = append(out, disk.Owner{
			Path:  e.Path,
			Mode:  typ | e.Mode&(fs.ModePerm|fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky),
			UID:   e.UID,
			GID:   e.GID,
			Major: uint32(e.Devmajor),
			Minor: uint32(e.Devminor),
		})
	}
	return out
}

// PruneImages removes the images no box uses, their blobs, and base disks
// no box uses. It returns the removed references. (An image being turned
// into a box by another process at that moment may lose its blobs; that
// create fails with ErrImage and can be retried.)
func (rt *Runtime) PruneImages(ctx context.Context) ([]string, error) {
	st, err := rt.imageStore()
	if err != nil {
		return nil, err
	}
	recs, err := rt.db.ListBoxes(ctx)
	if err != nil {
		return nil, err
	}
	used := map[string]bool{} // base disk paths
	for _, rec := range recs {
		var cfg boxConfig
		if json.Unmarshal(rec.Config, &cfg) == nil && cfg.Base != "" {
			used[cfg.Base] = true
		}
	}
	removed, err := st.Prune(ctx, func(digest string) bool { return used[rt.layout.ImageBase(digest)] })
	if err != nil {
		return removed, err
	}
	bases, _ := filepath.Glob(filepath.Join(rt.layout.BasesDir(), "*.ext4"))
	for _, b := range bases {
		if !used[b] {
			if err := os.Remove(b); err != nil {
				return removed, err
			}
		}
	}
	return removed, nil
}
