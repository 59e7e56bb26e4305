// Command agent is a minimal grpc-go agent shaped like the Go loader's
// agents.Serve: listen on a free loopback port, print "1|PORT" on stdout,
// serve grpc.health.v1 (overall status SERVING), stop gracefully on SIGTERM.
// It is the common agent on which `cargo xtask bench` compares loaders.
package main

import (
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

func main() {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintf(os.Stderr, "agent: listen: %v\n", err)
		os.Exit(1)
	}
	srv := grpc.NewServer()
	hs := health.NewServer()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(srv, hs)

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-sigs
		hs.Shutdown()
		srv.GracefulStop()
	}()

	port := lis.Addr().(*net.TCPAddr).Port
	fmt.Printf("1|%d\n", port)
	if err := srv.Serve(lis); err != nil {
		fmt.Fprintf(os.Stderr, "agent: serve: %v\n", err)
		os.Exit(1)
	}
}
