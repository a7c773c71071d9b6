package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/boxlite-go/boxlite"
)

// netBench measures the box network against QEMU's built-in slirp on the
// same image in the same run: box→host and host→box throughput, and an
// HTTP round trip through a forwarded port. All traffic stays on the
// host's loopback.
func netBench(ctx context.Context, agent, rootfs, accel string, mib, rounds, rtts int) error {
	blob := make([]byte, mib<<20)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer l.Close()
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(len(blob)))
		w.Write(blob)
	})}
	go srv.Serve(l)
	defer srv.Close()
	hostPort := l.Addr().(*net.TCPAddr).Port

	type result struct{ down, up, rtt []time.Duration }
	measure := func(slirp bool) (result, error) {
		var res result
		if slirp {
			os.Setenv("BOXLITE_NET_BASELINE", "slirp")
			defer os.Unsetenv("BOXLITE_NET_BASELINE")
		}
		rt, _, closeRT, err := tempRuntime(ctx, "boxlite-bench-net-", agent, accel)
		if err != nil {
			return res, err
		}
		defer closeRT()
		// slirp cannot pick host ports: both get fixed free ones.
		sink, web := freePort(), freePort()
		opts := boxlite.BoxOptions{Rootfs: rootfs, Ports: []boxlite.PortMapping{
			{HostPort: sink, BoxPort: 5001}, {HostPort: web, BoxPort: 8080},
		}}
		host := boxlite.HostAlias
		if slirp {
			host = "10.0.2.2" // slirp's alias for the host's loopback
		} else {
			opts.AllowNet = []string{boxlite.HostAlias}
		}
		box, err := rt.Create(ctx, opts, "")
		if err != nil {
			return res, err
		}
		if err := box.Start(ctx); err != nil {
			return res, err
		}
		url := fmt.Sprintf("http://%s:%d/blob", host, hostPort)
		if err := runScript(ctx, box, "wget -q -O /dev/null "+url); err != nil { // warm-up
			return res, err
		}
		for range rounds {
			t0 := time.Now()
			if err := runScript(ctx, box, "wget -q -O /dev/null "+url); err != nil {
				return res, err
			}
			res.down = append(res.down, time.Since(t0))

			d, err := pushToBox(ctx, box, sink, blob)
			if err != nil {
				return res, err
			}
			res.up = append(res.up, d)
		}
		if err := runScript(ctx, box, "mkdir -p /tmp/www && echo ok > /tmp/www/index.html && httpd -p 8080 -h /tmp/www"); err != nil {
			return res, err
		}
		client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
		target := fmt.Sprintf("http://127.0.0.1:%d/", web)
		if _, err := get(client, target, 40); err != nil { // warm-up, and waits for httpd
			return res, err
		}
		for range rtts {
			t0 := time.Now()
			if _, err := get(client, target, 1); err != nil {
				return res, err
			}
			res.rtt = append(res.rtt, time.Since(t0))
		}
		return res, nil
	}
	ours, err := measure(false)
	if err != nil {
		return fmt.Errorf("boxlite network: %w", err)
	}
	base, err := measure(true)
	if err != nil {
		return fmt.Errorf("slirp: %w", err)
	}
	mbps := func(ds []time.Duration) float64 {
		return float64(mib) / pct(ds, 50).Seconds()
	}
	fmt.Printf("| box→host, %d MiB (MB/s) | %d | %.1f | slirp %.1f | %.2f |\n", mib, rounds, mbps(ours.down), mbps(base.down), mbps(ours.down)/mbps(base.down))
	fmt.Printf("| host→box, %d MiB (MB/s) | %d | %.1f | slirp %.1f | %.2f |\n", mib, rounds, mbps(ours.up), mbps(base.up), mbps(ours.up)/mbps(base.up))
	fmt.Printf("| HTTP round trip via forwarded port | %d | %s | slirp %s | %.2f |\n", rtts, ms(pct(ours.rtt, 50)), ms(pct(base.rtt, 50)),
		float64(pct(ours.rtt, 50))/float64(pct(base.rtt, 50)))
	return nil
}

// pushToBox sends data to a one-shot listener in the box through the
// forwarded host port and returns once the box has read it all.
func pushToBox(ctx context.Context, box *boxlite.Box, hostPort int, data []byte) (time.Duration, error) {
	ex, err := box.Exec(ctx, boxlite.Command{Name: "sh", Args: []string{"-c", "nc -l -p 5001 | wc -c"}})
	if err != nil {
		return 0, err
	}
	// nc closes its sending side at once (its stdin is empty), so the
	// host cannot tell from the connection whether nc listens yet: ask.
	if err := runScript(ctx, box, "for i in $(seq 200); do netstat -tln | grep -q ':5001 ' && exit 0; usleep 20000; done; exit 1"); err != nil {
		ex.Kill(ctx)
		return 0, fmt.Errorf("box listener did not come up: %w", err)
	}
	c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", hostPort))
	if err != nil {
		return 0, err
	}
	t0 := time.Now()
	if _, err := c.Write(data); err != nil {
		return 0, err
	}
	c.(*net.TCPConn).CloseWrite()
	out, _ := io.ReadAll(ex.Stdout())
	res, err := ex.Wait(ctx)
	d := time.Since(t0)
	c.Close()
	if err != nil || res.ExitCode != 0 {
		return 0, fmt.Errorf("box sink: %v, exit %d", err, res.ExitCode)
	}
	if got, _ := strconv.Atoi(string(bytes.TrimSpace(out))); got != len(data) {
		return 0, fmt.Errorf("box sink read %q bytes, want %d", out, len(data))
	}
	return d, nil
}

// get fetches url, retrying up to tries times.
func get(c *http.Client, url string, tries int) (string, error) {
	var err error
	for range tries {
		var resp *http.Response
		if resp, err = c.Get(url); err == nil {
			b, rerr := io.ReadAll(resp.Body)
			resp.Body.Close()
			if rerr == nil && resp.StatusCode == 200 {
				return string(b), nil
			}
			err = fmt.Errorf("status %d, %v", resp.StatusCode, rerr)
		}
		time.Sleep(250 * time.Millisecond)
	}
	return "", err
}

func freePort() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
