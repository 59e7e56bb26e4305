// Command loader loads an agent the way the Go loader (codefly's
// agents/manager.Load) does, step by step, and times it: exec the binary,
// scan the first stdout line for the handshake, grpc.Dial the address, wait
// for the connection to be Ready, one grpc.health.v1 Check; then Close:
// close the connection, SIGTERM, wait for the exit.
//
//	loader -agent PATH -n N
//
// prints one JSON object: per-load samples in milliseconds (load, close) and
// the per-phase medians of the first load's breakdown.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

type phases struct {
	Exec      float64 `json:"exec_ms"`      // cmd.Start returned
	Handshake float64 `json:"handshake_ms"` // handshake line read
	Dial      float64 `json:"dial_ms"`      // grpc.Dial returned (non-blocking)
	Ready     float64 `json:"ready_ms"`     // connection Ready
	Health    float64 `json:"health_ms"`    // health Check answered SERVING
}

type report struct {
	Load   []float64 `json:"load_ms"`
	Close  []float64 `json:"close_ms"`
	Phases phases    `json:"phases_p50_ms"`
	// Host CPU (user + system, every thread of this process) per load.
	HostCPU float64 `json:"host_cpu_ms_per_load"`
}

// cpuMs is this process's CPU so far (user + system, all threads), in ms.
func cpuMs() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e6
}

func ms(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e6 }

func address(line string) (string, error) {
	parts := strings.SplitN(strings.TrimSpace(line), "|", 2)
	if len(parts) != 2 || (parts[0] != "1" && parts[0] != "2") {
		return "", fmt.Errorf("malformed handshake %q", line)
	}
	a := parts[1]
	if strings.HasPrefix(a, "dns:///") || strings.HasPrefix(a, "unix:") {
		return a, nil
	}
	return "127.0.0.1:" + a, nil
}

type conn struct {
	cmd  *exec.Cmd
	cc   *grpc.ClientConn
	done chan struct{}
}

func load(path string, p *phases) (*conn, error) {
	t0 := time.Now()
	cmd := exec.Command(path)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Stderr = nil
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p.Exec = ms(time.Since(t0))
	done := make(chan struct{})
	sc := bufio.NewScanner(stdout)
	if !sc.Scan() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return nil, fmt.Errorf("no handshake: %v", sc.Err())
	}
	line := sc.Text()
	p.Handshake = ms(time.Since(t0))
	// The reaper owns Wait; stdout is drained after the handshake.
	go func() {
		for sc.Scan() {
		}
	}()
	go func() { _ = cmd.Wait(); close(done) }()
	addr, err := address(line)
	if err != nil {
		return nil, err
	}
	cc, err := grpc.Dial(addr, grpc.WithInsecure())
	if err != nil {
		return nil, err
	}
	p.Dial = ms(time.Since(t0))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		s := cc.GetState()
		if s == connectivity.Ready {
			break
		}
		if !cc.WaitForStateChange(ctx, s) {
			return nil, fmt.Errorf("dial timeout (state %v)", s)
		}
	}
	p.Ready = ms(time.Since(t0))
	resp, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		return nil, err
	}
	if resp.Status != healthpb.HealthCheckResponse_SERVING {
		return nil, fmt.Errorf("not serving: %v", resp.Status)
	}
	p.Health = ms(time.Since(t0))
	return &conn{cmd: cmd, cc: cc, done: done}, nil
}

func (c *conn) close(grace time.Duration) {
	_ = c.cc.Close()
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(grace):
		_ = syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
		<-c.done
	}
}

func median(xs []float64) float64 {
	v := append([]float64(nil), xs...)
	sort.Float64s(v)
	if len(v) == 0 {
		return 0
	}
	return v[(len(v)-1)/2]
}

func main() {
	path := flag.String("agent", "", "agent binary")
	n := flag.Int("n", 100, "loads")
	flag.Parse()
	if *path == "" {
		fmt.Fprintln(os.Stderr, "usage: loader -agent PATH [-n N]")
		os.Exit(2)
	}
	var r report
	var ex, hs, di, re, he []float64
	cpu := 0.0
	for i := 0; i < *n; i++ {
		var p phases
		c0 := cpuMs()
		t := time.Now()
		c, err := load(*path, &p)
		if err != nil {
			fmt.Fprintf(os.Stderr, "loader: %v\n", err)
			os.Exit(1)
		}
		r.Load = append(r.Load, ms(time.Since(t)))
		cpu += cpuMs() - c0
		t = time.Now()
		c.close(5 * time.Second)
		r.Close = append(r.Close, ms(time.Since(t)))
		ex, hs, di, re, he = append(ex, p.Exec), append(hs, p.Handshake), append(di, p.Dial), append(re, p.Ready), append(he, p.Health)
	}
	r.Phases = phases{median(ex), median(hs), median(di), median(re), median(he)}
	if *n > 0 {
		r.HostCPU = cpu / float64(*n)
	}
	if err := json.NewEncoder(os.Stdout).Encode(r); err != nil {
		os.Exit(1)
	}
}
