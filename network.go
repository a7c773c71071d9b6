package boxlite

import (
	"context"
	"fmt"
	"net/netip"
	"strings"

	"github.com/boxlite-go/boxlite/internal/supervisor"
	"github.com/boxlite-go/boxlite/internal/vnet"
)

func (p PortMapping) toVnet() vnet.Port {
	proto := p.Protocol
	if proto == "" {
		proto = "tcp"
	}
	return vnet.Port{Proto: proto, HostIP: p.HostIP, HostPort: p.HostPort, BoxPort: p.BoxPort}
}

func portFromVnet(p vnet.Port) PortMapping {
	return PortMapping{Protocol: p.Proto, HostIP: p.HostIP, HostPort: p.HostPort, BoxPort: p.BoxPort}
}

// validateNetwork checks the network options and fills in their defaults.
func (o *BoxOptions) validateNetwork() error {
	switch o.Network {
	case NetworkEnabled:
	case NetworkDisabled:
		if len(o.Ports) > 0 || len(o.AllowNet) > 0 || len(o.Hosts) > 0 {
			return fmt.Errorf("network disabled: ports, allow-list and hosts need a network: %w", ErrInvalidArgument)
		}
		return nil
	default:
		return fmt.Errorf("network %q: want %q or %q: %w", o.Network, NetworkEnabled, NetworkDisabled, ErrInvalidArgument)
	}
	seen := map[string]bool{}
	for i, p := range o.Ports {
		vp := p.toVnet()
		if err := vp.Validate(); err != nil {
			return err
		}
		o.Ports[i].Protocol = vp.Proto
		if p.HostPort != 0 {
			key := vp.Proto + " " + p.HostIP + " " + fmt.Sprint(p.HostPort)
			if seen[key] {
				return fmt.Errorf("port %s is forwarded twice: %w", vp, ErrInvalidArgument)
			}
			seen[key] = true
		}
	}
	if _, err := vnet.ParsePolicy(o.AllowNet); err != nil {
		return err
	}
	for name, ip := range o.Hosts {
		if _, err := netip.ParseAddr(ip); err != nil {
			return fmt.Errorf("host %q: %q is not an IP address: %w", name, ip, ErrInvalidArgument)
		}
		if !vnet.ValidHostName(name) {
			return fmt.Errorf("host %q: not a valid host name: %w", name, ErrInvalidArgument)
		}
	}
	return nil
}

// netConfig is the supervisor's view of the box's network; nil when it
// has none.
func (b *Box) netConfig() *supervisor.NetConfig {
	if b.opts.Network == NetworkDisabled {
		return nil
	}
	nc := &supervisor.NetConfig{
		AllowNet: b.opts.AllowNet,
		AuditLog: b.rt.layout.NetAuditLog(b.id),
		Slirp:    b.rt.opts.slirp,
	}
	for _, p := range b.opts.Ports {
		nc.Ports = append(nc.Ports, p.toVnet())
	}
	if len(b.opts.Hosts) > 0 {
		nc.Hosts = map[string]string{}
		for name, ip := range b.opts.Hosts {
			nc.Hosts[strings.TrimSuffix(strings.ToLower(name), ".")] = ip
		}
	}
	return nc
}

// Metrics returns the running box's counters.
func (b *Box) Metrics(ctx context.Context) (BoxMetrics, error) {
	_, m, err := b.running()
	if err != nil {
		return BoxMetrics{}, err
	}
	var out BoxMetrics
	if h, ok := m.(*supervisor.Handle); ok && b.opts.Network != NetworkDisabled {
		rx, tx, err := h.NetStats(ctx)
		if err != nil {
			return out, fmt.Errorf("box %s: metrics: %w", b.label(), err)
		}
		out.NetRxBytes, out.NetTxBytes = rx, tx
	}
	return out, nil
}

// NetworkLog returns the box's egress audit log, oldest first: every
// connection and DNS query the box made, allowed or denied. It survives
// stops; the log is rotated past 8 MiB, keeping one older file.
func (b *Box) NetworkLog(ctx context.Context) ([]NetEvent, error) {
	evs, err := vnet.ReadAudit(b.rt.layout.NetAuditLog(b.id))
	if err != nil {
		return nil, fmt.Errorf("box %s: network log: %w", b.label(), err)
	}
	out := make([]NetEvent, len(evs))
	for i, e := range evs {
		out[i] = NetEvent{Time: e.Time, Proto: e.Proto, Dst: e.Dst, Host: e.Host, Allow: e.Allow, Reason: e.Reason}
	}
	return out, nil
}
