package supervisor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/boxlite-go/boxlite/internal/agent/client"
	pb "github.com/boxlite-go/boxlite/internal/agent/proto"
	"github.com/boxlite-go/boxlite/internal/errdefs"
	"github.com/boxlite-go/boxlite/internal/vmm"
	"github.com/boxlite-go/boxlite/internal/vnet"
)

// File names in the run directory.
const (
	NetSocketName = "net.sock" // QEMU's -netdev stream connects here
	NetStateName  = "net.json" // the resolved port forwards, for Info
)

// NetConfig is a box's network, as the supervisor runs it. A nil
// *NetConfig in Config means no network card at all.
type NetConfig struct {
	// AllowNet is the egress allow-list (vnet.ParsePolicy); empty: open.
	AllowNet []string `json:"allowNet,omitempty"`
	// Hosts are static DNS answers: name → IP address.
	Hosts map[string]string `json:"hosts,omitempty"`
	// Ports are forwarded from the host to the box.
	Ports []vnet.Port `json:"ports,omitempty"`
	// AuditLog is the egress audit log file; "" keeps none.
	AuditLog string `json:"auditLog,omitempty"`
	// Slirp uses QEMU's built-in slirp instead of the user-mode network
	// (benchmark baseline: no policy, no DNS control).
	Slirp bool `json:"slirp,omitempty"`
}

// NetState is what the supervisor reports of a running box's network.
type NetState struct {
	Ports []vnet.Port `json:"ports,omitempty"`
}

// auditMaxBytes rotates the audit log (one older file is kept).
const auditMaxBytes = 8 << 20

// network is a running box network: the stack and its QEMU socket.
type network struct {
	vn    *vnet.Network
	l     net.Listener
	audit *vnet.AuditLog
}

// startNetwork builds the box's network and points the machine's NIC at
// it. Port problems come back typed (ErrPortInUse, ErrPermission).
func startNetwork(cfg *Config, log *slog.Logger) (*network, error) {
	nc := cfg.Network
	// The library logs through logrus; its messages belong in our log.
	logrus.SetOutput(io.Discard)
	if nc.Slirp {
		nic := &vmm.NIC{Slirp: true, MAC: vnet.BoxMAC}
		for _, p := range nc.Ports {
			ip := p.HostIP
			if ip == "" {
				ip = "127.0.0.1"
			}
			nic.HostForwards = append(nic.HostForwards, fmt.Sprintf("%s:%s:%d-:%d", p.Proto, ip, p.HostPort, p.BoxPort))
		}
		cfg.Machine.NIC = nic
		return &network{}, nil
	}
	policy, err := vnet.ParsePolicy(nc.AllowNet)
	if err != nil {
		return nil, err
	}
	hosts := map[string]netip.Addr{}
	for name, ip := range nc.Hosts {
		a, err := netip.ParseAddr(ip)
		if err != nil {
			return nil, fmt.Errorf("host %s: %q is not an IP address: %w", name, ip, errdefs.ErrInvalidArgument)
		}
		hosts[name] = a
	}
	n := &network{}
	if nc.AuditLog != "" {
		if n.audit, err = vnet.OpenAudit(nc.AuditLog, auditMaxBytes); err != nil {
			return nil, fmt.Errorf("network audit log: %w", err)
		}
	}
	vcfg := vnet.Config{Policy: policy, Hosts: hosts, Ports: nc.Ports, Logger: log}
	if n.audit != nil {
		vcfg.Audit = n.audit.Record
	}
	if n.vn, err = vnet.New(vcfg); err != nil {
		n.close()
		return nil, err
	}
	sock := filepath.Join(cfg.Machine.Dir, NetSocketName)
	os.Remove(sock)
	if n.l, err = net.Listen("unix", sock); err != nil {
		n.close()
		return nil, fmt.Errorf("network socket: %w", err)
	}
	go func() {
		for {
			c, err := n.l.Accept()
			if err != nil {
				return
			}
			go func() {
				if err := n.vn.ServeQEMU(c); err != nil {
					log.Warn("network link", "err", err)
				}
			}()
		}
	}()
	cfg.Machine.NIC = &vmm.NIC{Socket: sock, MAC: vnet.BoxMAC}
	return n, nil
}

// configure brings the guest's NIC up and records the resolved ports.
func (n *network) configure(cfg Config, agent *client.Client) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req := &pb.NetworkConfig{
		Address: vnet.BoxIP.String() + "/" + strconv.Itoa(vnet.Subnet.Bits()),
		Gateway: vnet.GatewayIP.String(),
		Mtu:     vnet.MTU,
		Mac:     vnet.BoxMAC,
	}
	if cfg.Network.Slirp {
		// QEMU's slirp defaults.
		req.Address, req.Gateway, req.Nameservers = "10.0.2.15/24", "10.0.2.2", []string{"10.0.2.3"}
	}
	if _, err := agent.ConfigureNetwork(ctx, req); err != nil {
		return fmt.Errorf("guest network did not come up: %w: %w", errdefs.ErrNetwork, err)
	}
	var st NetState
	if n.vn != nil {
		st.Ports = n.vn.Ports()
	} else {
		st.Ports = cfg.Network.Ports
	}
	b, _ := json.Marshal(st)
	tmp := filepath.Join(cfg.Machine.Dir, NetStateName+".tmp")
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(cfg.Machine.Dir, NetStateName))
}

func (n *network) stats() (rx, tx uint64) {
	if n == nil || n.vn == nil {
		return 0, 0
	}
	return n.vn.Stats()
}

func (n *network) close() {
	if n == nil {
		return
	}
	if n.l != nil {
		n.l.Close()
	}
	if n.vn != nil {
		n.vn.Close()
	}
	if n.audit != nil {
		n.audit.Close()
	}
}

// ReadNetState reads the network state a box's supervisor recorded in
// its run directory.
func ReadNetState(dir string) (NetState, error) {
	var st NetState
	b, err := os.ReadFile(filepath.Join(dir, NetStateName))
	if errors.Is(err, os.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return st, err
	}
	return st, json.Unmarshal(b, &st)
}
