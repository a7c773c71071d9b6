// Command mkimage writes a root filesystem directory as a single-layer
// OCI image into an OCI layout, reproducibly: entries in path order, every
// mtime and the config's creation time set to $SOURCE_DATE_EPOCH (0 when
// unset), owners and modes as on disk (run it as root on a tree built as
// root), no user or group names. scripts/build-test-images.sh uses it.
//
//	go run ./scripts/mkimage -rootfs DIR -layout OUT -tag v1 \
//	    -env PATH=/usr/bin:/bin -workdir / -cmd '["sh"]'
package main

import (
	"archive/tar"
	"compress/gzip"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

type list []string

func (l *list) String() string     { return strings.Join(*l, ",") }
func (l *list) Set(v string) error { *l = append(*l, v); return nil }

func main() {
	rootfs := flag.String("rootfs", "", "root filesystem directory")
	out := flag.String("layout", "", "OCI layout directory to write (replaced)")
	tag := flag.String("tag", "latest", "org.opencontainers.image.ref.name of the image")
	workdir := flag.String("workdir", "", "config WorkingDir")
	cmdJSON := flag.String("cmd", "", "config Cmd, a JSON array")
	var env, exclude list
	flag.Var(&env, "env", "config Env entry K=V (repeatable)")
	flag.Var(&exclude, "exclude", "path below the root to leave out, e.g. .complete (repeatable)")
	flag.Parse()
	if *rootfs == "" || *out == "" {
		flag.Usage()
		os.Exit(2)
	}
	if err := run(*rootfs, *out, *tag, *workdir, *cmdJSON, env, exclude); err != nil {
		fmt.Fprintln(os.Stderr, "mkimage:", err)
		os.Exit(1)
	}
}

func run(rootfs, out, tag, workdir, cmdJSON string, env, exclude []string) error {
	epoch := time.Unix(0, 0).UTC()
	if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return fmt.Errorf("SOURCE_DATE_EPOCH %q: %w", s, err)
		}
		epoch = time.Unix(n, 0).UTC()
	}
	var cmd []string
	if cmdJSON != "" {
		if err := json.Unmarshal([]byte(cmdJSON), &cmd); err != nil {
			return fmt.Errorf("-cmd %q: %w", cmdJSON, err)
		}
	}
	tmp, err := os.CreateTemp(filepath.Dir(out), ".layer-*.tar.gz")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := writeLayer(tmp, rootfs, epoch, exclude); err != nil {
		tmp.Close()
		return fmt.Errorf("layer of %s: %w", rootfs, err)
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	layer, err := tarball.LayerFromFile(tmp.Name(), tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return err
	}
	base := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	img, err := mutate.Append(base, mutate.Addendum{
		Layer:   layer,
		History: v1.History{Created: v1.Time{Time: epoch}, CreatedBy: "boxlite mkimage"},
	})
	if err != nil {
		return err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	cf.Created = v1.Time{Time: epoch}
	cf.Config.Env = env
	cf.Config.WorkingDir = workdir
	cf.Config.Cmd = cmd
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return err
	}
	if img, err = mutate.CreatedAt(img, v1.Time{Time: epoch}); err != nil {
		return err
	}
	if err := os.RemoveAll(out); err != nil {
		return err
	}
	p, err := layout.Write(out, empty.Index)
	if err != nil {
		return err
	}
	return p.AppendImage(img, layout.WithAnnotations(map[string]string{
		"org.opencontainers.image.ref.name": tag,
	}))
}

// writeLayer writes the tree at root as a gzip-compressed tar to w.
func writeLayer(w io.Writer, root string, epoch time.Time, exclude []string) error {
	skip := map[string]bool{}
	for _, e := range exclude {
		skip[filepath.Clean(e)] = true
	}
	var paths []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil || rel == "." {
			return err
		}
		if skip[rel] {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		paths = append(paths, rel)
		return nil
	})
	if err != nil {
		return err
	}
	sort.Strings(paths)
	zw, err := gzip.NewWriterLevel(w, gzip.BestSpeed)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(zw)
	inodes := map[[2]uint64]string{} // hard links: first path of each inode
	for _, rel := range paths {
		if err := addEntry(tw, root, rel, epoch, inodes); err != nil {
			return fmt.Errorf("%s: %w", rel, err)
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return zw.Close()
}

func addEntry(tw *tar.Writer, root, rel string, epoch time.Time, inodes map[[2]uint64]string) error {
	p := filepath.Join(root, rel)
	fi, err := os.Lstat(p)
	if err != nil {
		return err
	}
	link := ""
	if fi.Mode()&fs.ModeSymlink != 0 {
		if link, err = os.Readlink(p); err != nil {
			return err
		}
	}
	hdr, err := tar.FileInfoHeader(fi, link)
	if err != nil {
		return err
	}
	hdr.Name = filepath.ToSlash(rel)
	if fi.IsDir() {
		hdr.Name += "/"
	}
	hdr.Uname, hdr.Gname = "", ""
	hdr.ModTime, hdr.AccessTime, hdr.ChangeTime = epoch, time.Time{}, time.Time{}
	hdr.Format = tar.FormatPAX
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return errors.New("no stat data")
	}
	hdr.Uid, hdr.Gid = int(st.Uid), int(st.Gid)
	if fi.Mode().IsRegular() && st.Nlink > 1 {
		key := [2]uint64{st.Dev, st.Ino}
		if first, ok := inodes[key]; ok {
			hdr.Typeflag, hdr.Linkname, hdr.Size = tar.TypeLink, first, 0
			return tw.WriteHeader(hdr)
		}
		inodes[key] = hdr.Name
	}
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return nil
	}
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(tw, f)
	return err
}
