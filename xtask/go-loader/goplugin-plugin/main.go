// Command goplugin-plugin is a hashicorp/go-plugin gRPC plugin with no
// service of its own (go-plugin serves health, broker and stdio): the
// plugin side of the go-plugin anchor in `cargo xtask bench`.
package main

import (
	"context"
	"errors"
	"net/rpc"

	plugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
)

var handshake = plugin.HandshakeConfig{
	ProtocolVersion:  1,
	MagicCookieKey:   "BENCH_PLUGIN",
	MagicCookieValue: "bench",
}

type p struct{}

func (p) Server(*plugin.MuxBroker) (interface{}, error) { return nil, errors.New("grpc only") }
func (p) Client(*plugin.MuxBroker, *rpc.Client) (interface{}, error) {
	return nil, errors.New("grpc only")
}
func (p) GRPCServer(*plugin.GRPCBroker, *grpc.Server) error { return nil }
func (p) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, c *grpc.ClientConn) (interface{}, error) {
	return c, nil
}

func main() {
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: handshake,
		Plugins:         map[string]plugin.Plugin{"bench": p{}},
		GRPCServer:      plugin.DefaultGRPCServer,
	})
}
