// Package vnet is the boxes' user-mode network: a virtual network per box,
// run by the host-side supervisor, that carries the box's traffic to the
// outside world under an egress policy.
//
// Policy decides which destinations a box may reach; DNSServer answers the
// box's name queries and refuses names the policy does not list; SniffHost
// reads the TLS server name or HTTP Host of a connection for name-based
// rules; AuditLog records every egress decision.
package vnet
