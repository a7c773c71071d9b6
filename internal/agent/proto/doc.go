// Package proto holds the host↔guest agent wire protocol: the gRPC service
// defined in agent.proto and its generated Go code.
//
// Regenerate with `go generate ./internal/agent/proto` (needs protoc,
// protoc-gen-go and protoc-gen-go-grpc).
package proto

//go:generate protoc --go_out=. --go_opt=paths=source_relative --go-grpc_out=. --go-grpc_opt=paths=source_relative agent.proto

// ProtocolVersion is the version the host and agent must agree on in Hello.
const ProtocolVersion = 1

// PortName is the virtio-serial port name the agent listens on.
const PortName = "org.boxlite.agent"

// VsockPort is the vsock port the agent listens on where vsock exists.
const VsockPort = 1024
