package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/boxlite-go/boxlite"
	"github.com/boxlite-go/boxlite/internal/registrytest"
)

// imageBench times a cold create from the python test image in a local
// registry (pull, verify, unpack, mkfs.ext4 -d, overlay) against crane
// export + tar -x + mkfs.ext4 -d of the same image, and a cached create.
func imageBench(ctx context.Context, images, crane string, n int) error {
	tmp, err := os.MkdirTemp("", "boxlite-bench-images-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	reg, err := registrytest.Start(tmp)
	if err != nil {
		return err
	}
	defer reg.Stop()
	if err := registrytest.PushLayout(reg.Host, filepath.Join(images, "python"), "python", "v1"); err != nil {
		return err
	}
	ref := reg.Host + "/python:v1"
	regs := []boxlite.Registry{{Host: reg.Host, Insecure: true}}

	var base, cold []time.Duration
	for i := range n + 1 {
		d, err := craneBaseline(ctx, crane, ref, filepath.Join(tmp, fmt.Sprint("crane-", i)))
		if err != nil {
			return fmt.Errorf("baseline: %w", err)
		}
		home := filepath.Join(tmp, fmt.Sprint("home-", i))
		rt, err := boxlite.NewRuntime(boxlite.Options{HomeDir: home, ImageRegistries: regs})
		if err != nil {
			return err
		}
		t0 := time.Now()
		_, err = rt.Create(ctx, boxlite.BoxOptions{Image: ref}, "")
		c := time.Since(t0)
		rt.Shutdown(ctx)
		os.RemoveAll(home)
		if err != nil {
			return err
		}
		if i > 0 { // the first round warms the page cache
			base, cold = append(base, d), append(cold, c)
		}
	}

	home := filepath.Join(tmp, "home-cached")
	rt, err := boxlite.NewRuntime(boxlite.Options{HomeDir: home, ImageRegistries: regs})
	if err != nil {
		return err
	}
	defer rt.Shutdown(ctx)
	if _, err := rt.Create(ctx, boxlite.BoxOptions{Image: ref}, ""); err != nil {
		return err
	}
	var cached []time.Duration
	for range 10 {
		t0 := time.Now()
		if _, err := rt.Create(ctx, boxlite.BoxOptions{Image: ref}, ""); err != nil {
			return err
		}
		cached = append(cached, time.Since(t0))
	}
	bm := pct(base, 50)
	fmt.Printf("| image baseline: crane export + tar -x + mkfs.ext4 -d (python image, local registry) | %d | %s | %s | 1.00 |\n", len(base), ms(bm), ms(pct(base, 99)))
	fmt.Printf("| image cold create: pull + verify + unpack + base ext4 + overlay | %d | %s | %s | %.2f |\n", len(cold), ms(pct(cold, 50)), ms(pct(cold, 99)), float64(pct(cold, 50))/float64(bm))
	fmt.Printf("| image cached create (same image again) | %d | %s | %s | |\n", len(cached), ms(pct(cached, 50)), ms(pct(cached, 99)))
	return nil
}

func craneBaseline(ctx context.Context, crane, ref, dir string) (time.Duration, error) {
	root := filepath.Join(dir, "root")
	if err := os.MkdirAll(root, 0o755); err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	tarball := filepath.Join(dir, "fs.tar")
	img := filepath.Join(dir, "base.ext4")
	t0 := time.Now()
	steps := [][]string{
		{crane, "export", "--insecure", ref, tarball},
		{"tar", "-xf", tarball, "-C", root},
		{"truncate", "-s", "10G", img},
		{"mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=1,lazy_journal_init=1", "-d", root, img},
	}
	for _, s := range steps {
		if out, err := exec.CommandContext(ctx, s[0], s[1:]...).CombinedOutput(); err != nil {
			return 0, fmt.Errorf("%v: %v: %s", s, err, out)
		}
	}
	return time.Since(t0), nil
}
