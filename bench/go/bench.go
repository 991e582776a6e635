// Command bench is the Go peer of bench/green_bench.c: the same benchmarks,
// one per run, with goroutines:   go_bench NAME [N]
//
//	yield N      two goroutines, GOMAXPROCS 1, each runtime.Gosched()s N times
//	             -> yield <ns> ns/switch            (elapsed / 2N)
//	spawn N      N times { go f(&wg); wg.Wait() }
//	             -> spawn <ns> ns/spawn+join        (elapsed / N)
//	spawnmany N  N times go f(&wg), then one wg.Wait() (goroutines cannot be
//	             joined one by one) -> spawnmany <ns> ns/thread
//	chan N       two goroutines ping-pong an int over two unbuffered channels,
//	             N round trips -> chan <ns> ns/hop (elapsed / 2N)
//	mutex N      4 goroutines each do N/4 Lock; counter++; Unlock on one
//	             sync.Mutex -> mutex <ns> ns/lock+unlock
//	park N       N goroutines blocked receiving on one unbuffered channel
//	             -> park_rss <bytes> B/thread (VmRSS growth / N),
//	                park_rss_total <MiB> MiB, park_pte_total <MiB> MiB,
//	                park_spawn <ns> ns/thread (first go statement to the
//	                last one parked: green_bench's park_spawn)
//
// Preemption (Go preempts a goroutine that has run 10 ms with a signal,
// unless GODEBUG=asyncpreemptoff=1; it has no counters of its own to print):
//
//	ticker N         GOMAXPROCS 1: a call-free CPU hog beside a goroutine
//	                 that sleeps 1 ms N times -> ticker_p50, ticker_p99,
//	                 ticker_max <us> us (lateness: actual sleep - 1 ms)
//	ticker_calls N   the same beside a hog that calls (naive fib(20) in a
//	                 loop): what the reduction budget's peer is -- Go's
//	                 cooperative preemption at function prologues, which
//	                 alone remains with GODEBUG=asyncpreemptoff=1
//	ticker_libc N    the same beside a hog in the runtime's own code: allocation,
//	                 fmt.Sprintf, sort.Slice with a comparator, a copy
//	                 -> ticker_libc_p50, ticker_libc_p99, ticker_libc_max
//	preempt_cost N   4 goroutines, GOMAXPROCS 2, each N xorshift64 steps, no
//	                 calls -> preempt_cost <ms> ms (elapsed),
//	                 preempt_cost_cpu <ms> ms (user+system CPU time)
//	yield_signals N  4 goroutines, GOMAXPROCS 2, runtime.Gosched() in a loop
//	                 for N ms -> yield_signals_yields <count> yields
//
// The echo benchmark's Go peer (bench/echo_bench.sh), a server, not a
// benchmark: it serves until killed and prints nothing more:
//
//	echo_server [PORT]  a TCP echo server on 127.0.0.1:PORT (default 0: any
//	                    free port), one goroutine per connection reading
//	                    into a 4 KiB buffer and writing it all back until
//	                    EOF -- the Go of examples/echo_server.c; prints
//	                    "listening on 127.0.0.1:PORT" once listening
//
// The bimodal table's Go peer (bench/bimodal_bench.sh), also a server:
//
//	bimodal_server [PORT]  one goroutine per connection reading 16-byte
//	                       requests { id uint64, service_us uint32, magic
//	                       uint32 } (bench/bimodal.h), doing service_us
//	                       calls of a calibrated ~1 us chunk of xorshift64
//	                       steps, and writing the 16 bytes back -- the Go of
//	                       bench/bimodal_server.c, calibrated the same way
//
// yield and ticker set GOMAXPROCS to 1, preempt_cost and yield_signals to 2,
// unless the GOMAXPROCS variable is set (run.sh sets it).  Timing is the
// monotonic clock around the whole pass, after an untimed warm-up pass of
// N/10 (not for park, which calls runtime.GC() before each RSS reading).
// Standard library only; builds offline.
package main

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

const mutexGoroutines = 4

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "go_bench: "+format+"\n", args...)
	os.Exit(1)
}

func done(wg *sync.WaitGroup) { wg.Done() }

func runYield(n uint64) time.Duration {
	var wg sync.WaitGroup
	yielder := func() {
		for i := uint64(0); i < n; i++ {
			runtime.Gosched()
		}
		wg.Done()
	}
	t0 := time.Now()
	wg.Add(2)
	go yielder()
	go yielder()
	wg.Wait()
	return time.Since(t0)
}

func runSpawn(n uint64) time.Duration {
	var wg sync.WaitGroup
	t0 := time.Now()
	for i := uint64(0); i < n; i++ {
		wg.Add(1)
		go done(&wg)
		wg.Wait()
	}
	return time.Since(t0)
}

func runSpawnMany(n uint64) time.Duration {
	var wg sync.WaitGroup
	t0 := time.Now()
	wg.Add(int(n))
	for i := uint64(0); i < n; i++ {
		go done(&wg)
	}
	wg.Wait()
	return time.Since(t0)
}

func runChan(n uint64) time.Duration {
	ping, pong := make(chan int), make(chan int)
	var wg sync.WaitGroup
	wg.Add(2)
	t0 := time.Now()
	go func() { // ponger
		for i := uint64(0); i < n; i++ {
			pong <- <-ping
		}
		wg.Done()
	}()
	go func() { // pinger
		for i := uint64(0); i < n; i++ {
			v := int(i)
			ping <- v
			if back := <-pong; back != v {
				fail("chan: sent %d, got %d back", v, back)
			}
		}
		wg.Done()
	}()
	wg.Wait()
	return time.Since(t0)
}

func runMutex(n uint64) time.Duration {
	var mu sync.Mutex
	var counter uint64 // guarded by mu
	var wg sync.WaitGroup
	per := n / mutexGoroutines
	t0 := time.Now()
	wg.Add(mutexGoroutines)
	for g := 0; g < mutexGoroutines; g++ {
		go func() {
			for i := uint64(0); i < per; i++ {
				mu.Lock()
				counter++
				mu.Unlock()
			}
			wg.Done()
		}()
	}
	wg.Wait()
	dt := time.Since(t0)
	if counter != n {
		fail("mutex: BROKEN: counter is %d after %d locked increments", counter, n)
	}
	return dt
}

// statusKB returns the value of a "Key:  123 kB" line of /proc/self/status.
func statusKB(key string) uint64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		fail("%v", err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) >= 2 && fields[0] == key+":" {
			v, err := strconv.ParseUint(fields[1], 10, 64)
			if err != nil {
				fail("/proc/self/status: %q: %v", s.Text(), err)
			}
			return v
		}
	}
	if err := s.Err(); err != nil {
		fail("/proc/self/status: %v", err)
	}
	fail("no %s in /proc/self/status", key)
	return 0
}

func runPark(n uint64) {
	gate := make(chan struct{}) // never sent on; closed to release
	var parked, exited sync.WaitGroup
	parked.Add(int(n))
	exited.Add(int(n))
	runtime.GC()
	before := statusKB("VmRSS")
	t0 := time.Now()
	for i := uint64(0); i < n; i++ {
		go func() {
			parked.Done()
			<-gate
			exited.Done()
		}()
	}
	parked.Wait()
	spawn := time.Since(t0)
	time.Sleep(100 * time.Millisecond) // the last ones reach the receive
	runtime.GC()
	rss, pte := statusKB("VmRSS"), statusKB("VmPTE")
	close(gate)
	exited.Wait()
	fmt.Printf("park_rss %.0f B/thread\n", (float64(rss)-float64(before))*1024/float64(n))
	fmt.Printf("park_rss_total %.1f MiB\n", float64(rss)/1024)
	fmt.Printf("park_pte_total %.1f MiB\n", float64(pte)/1024)
	fmt.Printf("park_spawn %.0f ns/thread\n", float64(spawn.Nanoseconds())/float64(n))
}

// ---- Preemption ----------------------------------------------------------

const (
	tick          = time.Millisecond // the ticker sleeps 1 ms
	hogCheckEvery = 4096             // hog increments between looks at hogStop
	costThreads   = 4
	yloopThreads  = 4
)

var (
	hogCounter uint64 // the hog's work
	hogStop    int32  // set by the ticker when done
	crunchSink uint64
)

// hog has no call in its loop, so only an asynchronous preemption can take
// the P from it; the stop flag is one atomic load every hogCheckEvery steps.
func hog(done chan<- struct{}) {
	for {
		for i := 0; i < hogCheckEvery; i++ {
			hogCounter++
		}
		if atomic.LoadInt32(&hogStop) != 0 {
			break
		}
	}
	close(done)
}

func fib(n uint) uint64 {
	if n < 2 {
		return uint64(n)
	}
	return fib(n-1) + fib(n-2)
}

// callingHog calls fib in a loop: a preemption request is honoured at any
// of its function prologues.
func callingHog(done chan<- struct{}) {
	for atomic.LoadInt32(&hogStop) == 0 {
		crunchSink += fib(20)
	}
	close(done)
}

// libcHog is green_bench's libc_hog in Go: the heap, formatting, a sort
// calling back a comparator, a copy -- the runtime's own code, which Go
// preempts at its function prologues and asynchronously.
func libcHog(done chan<- struct{}) {
	x := uint64(0x9e3779b97f4a7c15)
	buf := make([]byte, 512)
	v := make([]int, 256)
	for atomic.LoadInt32(&hogStop) == 0 {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		p := make([]byte, 64+x%2000)
		for i := range p {
			p[i] = byte(x)
		}
		crunchSink += uint64(p[len(p)-1])
		s := fmt.Sprintf("%d %s %.3f", x, "green", float64(x%1000)/7)
		crunchSink += uint64(len(s))
		for i := range v {
			v[i] = int((x >> (uint(i) % 48)) & 0xffff)
		}
		sort.Slice(v, func(i, j int) bool { return v[i] < v[j] })
		for i := 0; i < 128; i++ {
			buf[i] = byte(v[i])
		}
		copy(buf[128:], buf[:128])
		crunchSink += uint64(buf[17])
	}
	close(done)
}

// runTicker fills late with the lateness of len(late) 1 ms sleeps beside the hog.
func runTicker(late []time.Duration, theHog func(chan<- struct{})) {
	atomic.StoreInt32(&hogStop, 0)
	hogDone, tickDone := make(chan struct{}), make(chan struct{})
	go theHog(hogDone)
	go func() {
		for i := range late {
			t0 := time.Now()
			time.Sleep(tick)
			late[i] = time.Since(t0) - tick
		}
		atomic.StoreInt32(&hogStop, 1)
		close(tickDone)
	}()
	<-tickDone
	<-hogDone
}

// percentile: nearest rank, the smallest sample >= p percent of them (sorted).
func percentile(v []time.Duration, p int) time.Duration {
	rank := (len(v)*p + 99) / 100
	if rank == 0 {
		rank = 1
	}
	return v[rank-1]
}

func benchTicker(n uint64)      { tickerWith("ticker", n, hog) }
func benchTickerCalls(n uint64) { tickerWith("ticker", n, callingHog) }
func benchTickerLibc(n uint64)  { tickerWith("ticker_libc", n, libcHog) }

func tickerWith(name string, n uint64, theHog func(chan<- struct{})) {
	if n/10 > 0 {
		runTicker(make([]time.Duration, n/10), theHog)
	}
	late := make([]time.Duration, n)
	runTicker(late, theHog)
	sort.Slice(late, func(i, j int) bool { return late[i] < late[j] })
	us := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }
	fmt.Printf("%s_p50 %.1f us\n", name, us(percentile(late, 50)))
	fmt.Printf("%s_p99 %.1f us\n", name, us(percentile(late, 99)))
	fmt.Printf("%s_max %.1f us\n", name, us(late[n-1]))
}

// cruncher is call-free arithmetic: a serial chain of shifts and xors.
func cruncher(x, n uint64) uint64 {
	for i := uint64(0); i < n; i++ {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
	}
	crunchSink = x
	return x
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		fail("getrusage: %v", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// runPreemptCost: goroutines i and i+2 start from the same seed and must
// end with the same value.
func runPreemptCost(n uint64) time.Duration {
	var res [costThreads]uint64
	var wg sync.WaitGroup
	t0 := time.Now()
	wg.Add(costThreads)
	for g := 0; g < costThreads; g++ {
		go func(g int) {
			res[g] = cruncher(0x9e3779b97f4a7c15+uint64(g%2), n)
			wg.Done()
		}(g)
	}
	wg.Wait()
	dt := time.Since(t0)
	for g := 0; g+2 < costThreads; g++ {
		if res[g] != res[g+2] {
			fail("preempt_cost: BROKEN: goroutines %d and %d ran the same steps and got %#x and %#x",
				g, g+2, res[g], res[g+2])
		}
	}
	return dt
}

func benchPreemptCost(n uint64) {
	if n/10 > 0 {
		runPreemptCost(n / 10)
	}
	cpu0 := cpuTime()
	dt := runPreemptCost(n)
	cpu := cpuTime() - cpu0
	fmt.Printf("preempt_cost %.1f ms\n", float64(dt.Nanoseconds())/1e6)
	fmt.Printf("preempt_cost_cpu %.1f ms\n", float64(cpu.Nanoseconds())/1e6)
}

func runYieldLoop(ms uint64) uint64 {
	var stop int32
	var yields uint64
	var wg sync.WaitGroup
	wg.Add(yloopThreads)
	for g := 0; g < yloopThreads; g++ {
		go func() {
			k := uint64(0)
			for atomic.LoadInt32(&stop) == 0 {
				runtime.Gosched()
				k++
			}
			atomic.AddUint64(&yields, k)
			wg.Done()
		}()
	}
	time.Sleep(time.Duration(ms) * time.Millisecond)
	atomic.StoreInt32(&stop, 1)
	wg.Wait()
	return yields
}

func benchYieldSignals(n uint64) {
	if n/10 > 0 {
		runYieldLoop(n / 10)
	}
	fmt.Printf("yield_signals_yields %d yields\n", runYieldLoop(n))
}

// ---- Echo server ---------------------------------------------------------

const echoBuf = 4096 // as examples/echo_server.c

func echoConn(c net.Conn) {
	defer c.Close()
	buf := make([]byte, echoBuf)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			if _, werr := c.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				fmt.Fprintf(os.Stderr, "go_bench: echo_server: %v\n", err)
			}
			return
		}
	}
}

// runEchoServer accepts as net/http does: a temporary error (out of fds...)
// pauses and retries, anything else is fatal.
func runEchoServer(args []string) {
	port := "0"
	if len(args) > 1 {
		usage()
	} else if len(args) == 1 {
		if v, err := strconv.ParseUint(args[0], 10, 16); err != nil {
			fail("bad port %q", args[0])
		} else {
			port = strconv.FormatUint(v, 10)
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:"+port)
	if err != nil {
		fail("echo_server: %v", err)
	}
	fmt.Printf("listening on %s\n", ln.Addr())
	for {
		c, err := ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Temporary() { //nolint:staticcheck // as net/http
				fmt.Fprintf(os.Stderr, "go_bench: echo_server: accept: %v (pausing 10 ms)\n", err)
				time.Sleep(10 * time.Millisecond)
				continue
			}
			fail("echo_server: accept: %v", err)
		}
		go echoConn(c)
	}
}

// ---- Bimodal server ------------------------------------------------------

const bimodalMagic = 0x62696d6f // bench/bimodal.h

var bimodalStepsPerUs uint64
var bimodalSink uint64

// bimodalChunk: n xorshift64 steps, a serial chain with no call in it.
//
//go:noinline
func bimodalChunk(x, n uint64) uint64 {
	for i := uint64(0); i < n; i++ {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
	}
	return x
}

//go:noinline
func bimodalServe(us uint32, seed uint64) {
	x := seed | 1
	for i := uint32(0); i < us; i++ {
		x = bimodalChunk(x, bimodalStepsPerUs)
	}
	atomic.StoreUint64(&bimodalSink, x)
}

// bimodalCalibrate: the fastest of 8 trials of 2 ms, as bimodal_server.c.
func bimodalCalibrate() {
	best, x := uint64(0), uint64(88172645463325252)
	for t := 0; t < 8; t++ {
		steps, t0 := uint64(0), time.Now()
		var dt time.Duration
		for dt < 2*time.Millisecond {
			x = bimodalChunk(x, 1000)
			steps += 1000
			dt = time.Since(t0)
		}
		if v := steps * 1000 / uint64(dt.Nanoseconds()); v > best {
			best = v
		}
	}
	atomic.StoreUint64(&bimodalSink, x)
	if best == 0 {
		best = 1
	}
	bimodalStepsPerUs = best
	fmt.Fprintf(os.Stderr, "go_bench: bimodal_server: calibrated: %d steps/us\n", best)
}

func bimodalConn(c net.Conn) {
	defer c.Close()
	var m [16]byte
	for {
		if _, err := io.ReadFull(c, m[:]); err != nil {
			return
		}
		id := binary.LittleEndian.Uint64(m[0:8])
		if binary.LittleEndian.Uint32(m[12:16]) != bimodalMagic {
			return
		}
		bimodalServe(binary.LittleEndian.Uint32(m[8:12]), id)
		if _, err := c.Write(m[:]); err != nil {
			return
		}
	}
}

func runBimodalServer(args []string) {
	port := "0"
	if len(args) > 1 {
		usage()
	} else if len(args) == 1 {
		if v, err := strconv.ParseUint(args[0], 10, 16); err != nil {
			fail("bad port %q", args[0])
		} else {
			port = strconv.FormatUint(v, 10)
		}
	}
	bimodalCalibrate()
	ln, err := net.Listen("tcp", "127.0.0.1:"+port)
	if err != nil {
		fail("bimodal_server: %v", err)
	}
	fmt.Printf("listening on %s\n", ln.Addr())
	for {
		c, err := ln.Accept()
		if err != nil {
			fail("bimodal_server: accept: %v", err)
		}
		go bimodalConn(c)
	}
}

type bench struct {
	defaultN uint64
	run      func(n uint64) time.Duration // nil: own runs and prints all
	opsPerN  float64                      // value = elapsed / (opsPerN * n)
	unit     string
	own      func(n uint64)
	procs    int // GOMAXPROCS when the variable is unset; 0: the default
}

var benches = map[string]bench{
	"yield":         {3000000, runYield, 2, "ns/switch", nil, 1},
	"spawn":         {1000000, runSpawn, 1, "ns/spawn+join", nil, 0},
	"spawnmany":     {1000000, runSpawnMany, 1, "ns/thread", nil, 0},
	"chan":          {2000000, runChan, 2, "ns/hop", nil, 0},
	"mutex":         {20000000, runMutex, 1, "ns/lock+unlock", nil, 0},
	"park":          {1000000, nil, 1, "B/thread", runPark, 0},
	"ticker":        {2000, nil, 1, "", benchTicker, 1},
	"ticker_calls":  {200, nil, 1, "", benchTickerCalls, 1},
	"ticker_libc":   {200, nil, 1, "", benchTickerLibc, 1},
	"preempt_cost":  {200000000, nil, 1, "", benchPreemptCost, 2},
	"yield_signals": {500, nil, 1, "", benchYieldSignals, 2},
}

func usage() {
	fail("usage: go_bench yield|spawn|spawnmany|chan|mutex|park|ticker|ticker_calls|ticker_libc|preempt_cost|yield_signals [N]\n" +
		"       go_bench echo_server [PORT]\n" +
		"       go_bench bimodal_server [PORT]")
}

func main() {
	if len(os.Args) < 2 || len(os.Args) > 3 {
		usage()
	}
	name := os.Args[1]
	if name == "echo_server" {
		runEchoServer(os.Args[2:])
		return
	}
	if name == "bimodal_server" {
		runBimodalServer(os.Args[2:])
		return
	}
	b, ok := benches[name]
	if !ok {
		usage()
	}
	n := b.defaultN
	if len(os.Args) == 3 {
		v, err := strconv.ParseUint(os.Args[2], 10, 63)
		if err != nil || v == 0 {
			fail("bad N %q", os.Args[2])
		}
		n = v
	}
	if name == "mutex" {
		n -= n % mutexGoroutines
		if n == 0 {
			usage()
		}
	}
	if b.procs != 0 && os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(b.procs)
	}

	if b.run == nil {
		b.own(n)
		return
	}
	warm := n / 10
	if name == "mutex" {
		warm -= warm % mutexGoroutines
	}
	if warm > 0 {
		b.run(warm)
	}
	dt := b.run(n)
	fmt.Printf("%s %.2f %s\n", name, float64(dt.Nanoseconds())/(b.opsPerN*float64(n)), b.unit)
}
