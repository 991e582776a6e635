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
//	                park_rss_total <MiB> MiB, park_pte_total <MiB> MiB
//
// yield sets GOMAXPROCS to 1 unless the GOMAXPROCS variable is set (run.sh
// sets it to 1).  Timing is the monotonic clock around the whole pass, after
// an untimed warm-up pass of N/10 (not for park, which calls runtime.GC()
// before each RSS reading).  Standard library only; builds offline.
package main

import (
	"bufio"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
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
	for i := uint64(0); i < n; i++ {
		go func() {
			parked.Done()
			<-gate
			exited.Done()
		}()
	}
	parked.Wait()
	time.Sleep(100 * time.Millisecond) // the last ones reach the receive
	runtime.GC()
	rss, pte := statusKB("VmRSS"), statusKB("VmPTE")
	close(gate)
	exited.Wait()
	fmt.Printf("park_rss %.0f B/thread\n", (float64(rss)-float64(before))*1024/float64(n))
	fmt.Printf("park_rss_total %.1f MiB\n", float64(rss)/1024)
	fmt.Printf("park_pte_total %.1f MiB\n", float64(pte)/1024)
}

type bench struct {
	defaultN uint64
	run      func(n uint64) time.Duration // nil for park
	opsPerN  float64                      // value = elapsed / (opsPerN * n)
	unit     string
}

var benches = map[string]bench{
	"yield":     {3000000, runYield, 2, "ns/switch"},
	"spawn":     {1000000, runSpawn, 1, "ns/spawn+join"},
	"spawnmany": {1000000, runSpawnMany, 1, "ns/thread"},
	"chan":      {2000000, runChan, 2, "ns/hop"},
	"mutex":     {20000000, runMutex, 1, "ns/lock+unlock"},
	"park":      {1000000, nil, 1, "B/thread"},
}

func usage() {
	fail("usage: go_bench yield|spawn|spawnmany|chan|mutex|park [N]")
}

func main() {
	if len(os.Args) < 2 || len(os.Args) > 3 {
		usage()
	}
	name := os.Args[1]
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
	if name == "yield" && os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(1)
	}

	if b.run == nil {
		runPark(n)
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
