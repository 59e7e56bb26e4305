// Command goplugin-host loads a go-plugin gRPC plugin the way go-plugin
// hosts do (NewClient, Client, Dispense) plus one health Check, then Kill:
// the go-plugin anchor of `cargo xtask bench`.
//
//	goplugin-host -plugin PATH -n N
//
// prints {"load_ms": [...], "close_ms": [...]}.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io/ioutil"
	"net/rpc"
	"os"
	"os/exec"
	"time"

	hclog "github.com/hashicorp/go-hclog"
	plugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
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

func ms(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e6 }

func main() {
	path := flag.String("plugin", "", "plugin binary")
	n := flag.Int("n", 100, "loads")
	flag.Parse()
	logger := hclog.New(&hclog.LoggerOptions{Output: ioutil.Discard, Level: hclog.Error})
	var load, closeMs []float64
	for i := 0; i < *n; i++ {
		t := time.Now()
		c := plugin.NewClient(&plugin.ClientConfig{
			HandshakeConfig:  handshake,
			Plugins:          map[string]plugin.Plugin{"bench": p{}},
			Cmd:              exec.Command(*path),
			AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
			Logger:           logger,
		})
		rc, err := c.Client()
		if err != nil {
			fmt.Fprintf(os.Stderr, "goplugin-host: %v\n", err)
			os.Exit(1)
		}
		raw, err := rc.Dispense("bench")
		if err != nil {
			fmt.Fprintf(os.Stderr, "goplugin-host: dispense: %v\n", err)
			os.Exit(1)
		}
		conn := raw.(*grpc.ClientConn)
		resp, err := healthpb.NewHealthClient(conn).Check(context.Background(),
			&healthpb.HealthCheckRequest{Service: "plugin"})
		if err != nil || resp.Status != healthpb.HealthCheckResponse_SERVING {
			fmt.Fprintf(os.Stderr, "goplugin-host: health: %v %v\n", resp, err)
			os.Exit(1)
		}
		load = append(load, ms(time.Since(t)))
		t = time.Now()
		c.Kill()
		closeMs = append(closeMs, ms(time.Since(t)))
	}
	_ = json.NewEncoder(os.Stdout).Encode(map[string][]float64{"load_ms": load, "close_ms": closeMs})
}
