package guest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/boxlite-go/boxlite/internal/agent/proto"
)

// nicWait bounds how long ConfigureNetwork waits for the NIC's driver,
// which loads in the background after the agent starts serving.
const nicWait = 20 * time.Second

// ConfigureNetwork brings up the NIC whose hardware address is req.Mac (the
// first non-loopback one when empty) with a static address and default
// route, and points the box's resolv.conf at the host-side DNS.
func (s *Server) ConfigureNetwork(ctx context.Context, req *pb.NetworkConfig) (*pb.NetworkStatus, error) {
	addr, err := netlink.ParseAddr(req.GetAddress())
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "network: address %q: %v", req.GetAddress(), err)
	}
	gw := net.ParseIP(req.GetGateway())
	if gw == nil {
		return nil, status.Errorf(codes.InvalidArgument, "network: gateway %q is not an IP address", req.GetGateway())
	}
	ctx, cancel := context.WithTimeout(ctx, nicWait)
	defer cancel()
	link, err := waitLink(ctx, req.GetMac())
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "network: %v", err)
	}
	name := link.Attrs().Name
	if mtu := int(req.GetMtu()); mtu > 0 {
		if err := netlink.LinkSetMTU(link, mtu); err != nil {
			return nil, status.Errorf(codes.Internal, "network: %s: mtu %d: %v", name, mtu, err)
		}
	}
	if err := netlink.AddrReplace(link, addr); err != nil {
		return nil, status.Errorf(codes.Internal, "network: %s: address %s: %v", name, addr, err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return nil, status.Errorf(codes.Internal, "network: %s: up: %v", name, err)
	}
	route := &netlink.Route{LinkIndex: link.Attrs().Index, Gw: gw}
	if err := netlink.RouteReplace(route); err != nil {
		return nil, status.Errorf(codes.Internal, "network: %s: default route via %s: %v", name, gw, err)
	}
	if s.cfg.Root != "" {
		servers := req.GetNameservers()
		if len(servers) == 0 {
			servers = []string{gw.String()}
		}
		if err := writeResolvConf(s.cfg.Root, servers); err != nil {
			return nil, status.Errorf(codes.Internal, "network: %v", err)
		}
	}
	s.log.Info("network up", "interface", name, "address", addr, "gateway", gw)
	return &pb.NetworkStatus{Interface: name}, nil
}

// waitLink waits for the NIC with hardware address mac (or any non-loopback
// NIC when mac is ""). It wakes on the kernel's link notifications, and
// polls only if it cannot subscribe to them.
func waitLink(ctx context.Context, mac string) (netlink.Link, error) {
	want, _ := net.ParseMAC(mac)
	// Subscribe before listing, so that a NIC appearing in between wakes us.
	updates := make(chan netlink.LinkUpdate, 16)
	stop := make(chan struct{})
	poll := 250 * time.Millisecond
	if err := netlink.LinkSubscribe(updates, stop); err != nil {
		updates, poll = nil, 20*time.Millisecond
	} else {
		defer func() {
			close(stop)
			go func() {
				for range updates { // until the subscription's reader ends
				}
			}()
		}()
	}
	for {
		links, err := netlink.LinkList()
		if err != nil {
			return nil, err
		}
		for _, l := range links {
			a := l.Attrs()
			if a.Flags&net.FlagLoopback != 0 || l.Type() != "device" {
				continue
			}
			if want == nil || strings.EqualFold(a.HardwareAddr.String(), want.String()) {
				return l, nil
			}
		}
		select {
		case <-ctx.Done():
			if mac != "" {
				return nil, fmt.Errorf("no network interface with address %s appeared", mac)
			}
			return nil, fmt.Errorf("no network interface appeared")
		case _, ok := <-updates:
			if !ok {
				updates, poll = nil, 20*time.Millisecond
			}
		case <-time.After(poll):
		}
	}
}

// writeResolvConf replaces the box's /etc/resolv.conf (a symlink, e.g. to a
// resolver stub that does not run in a box, is replaced too, never
// followed).
func writeResolvConf(root string, servers []string) error {
	var b strings.Builder
	b.WriteString("# written by boxlite-agent: the host answers DNS for this box\n")
	for _, s := range servers {
		fmt.Fprintf(&b, "nameserver %s\n", s)
	}
	dir := filepath.Join(root, "etc")
	if fi, err := os.Lstat(dir); err != nil || !fi.IsDir() {
		return fmt.Errorf("resolv.conf: %s is not a directory in the box", "/etc")
	}
	// A restarted box has it already: rewriting it would cost a boot
	// tens of milliseconds of disk work under emulation.
	file := filepath.Join(dir, "resolv.conf")
	if fi, err := os.Lstat(file); err == nil && fi.Mode().IsRegular() && fi.Size() == int64(b.Len()) {
		if old, err := os.ReadFile(file); err == nil && string(old) == b.String() {
			return nil
		}
	}
	tmp := filepath.Join(dir, ".resolv.conf.boxlite")
	os.Remove(tmp)
	if err := os.WriteFile(tmp, []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("resolv.conf: %w", err)
	}
	if err := os.Rename(tmp, file); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("resolv.conf: %w", err)
	}
	return nil
}

// disableIPv6ForNICs turns IPv6 off for network interfaces created from
// now on. The box network is IPv4 only: as Docker does for such networks,
// the NIC gets no IPv6, which spares the boot its link-local address,
// duplicate address detection and router solicitations; loopback, which
// exists already, keeps ::1. Set before the NIC's driver loads, it costs
// nothing per interface.
func disableIPv6ForNICs() error {
	err := os.WriteFile("/proc/sys/net/ipv6/conf/default/disable_ipv6", []byte("1"), 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil // a kernel without IPv6
	}
	return err
}

// loopbackUp brings up lo, which every box has, networked or not.
func loopbackUp() error {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return err
	}
	return netlink.LinkSetUp(lo)
}
