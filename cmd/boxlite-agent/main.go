// Command boxlite-agent is the guest agent: /init (PID 1) of every box's
// micro-VM. It is built static (CGO_ENABLED=0) and serves the host over
// virtio-serial or vsock; see package internal/agent/guest.
package main

import "github.com/boxlite-go/boxlite/internal/agent/guest"

func main() {
	guest.Main()
}
