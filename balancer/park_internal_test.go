package balancer

import (
	"testing"
	"time"
)

// TestIdleWatchReadsCPUOnlyWhenStill: under load an endpoint at its
// limit finishes requests every tick, and the watch then reads no CPU
// from /proc (a few syscalls a file, a hundred ticks a second); once its
// slots hold still it measures, and parks a worker that computes
// nothing after ParkIdle.
func TestIdleWatchReadsCPUOnlyWhenStill(t *testing.T) {
	b, err := New(Config{MaxInflight: 1, ParkIdle: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	e := b.NewEndpoint(1, 0, "tcp", "127.0.0.1:1")
	reads := 0
	var used time.Duration // the worker's CPU, which the test advances
	read := func() (time.Duration, bool) { reads++; return used, true }
	running := false // whether the worker's main thread is runnable now
	e.server.Store(&serverProc{pid: 1, cpu: read, busy: read,
		running: func() (bool, bool) { return running, true }})
	b.Add(e)
	if _, ok := e.tryAcquire(); !ok {
		t.Fatal("no slot")
	}

	now := time.Now()
	tick := func() bool { now = now.Add(b.parkTick); return b.checkIdle(e, now) }
	for range 20 { // a request ends and the next takes its slot, every tick
		e.served.Add(1)
		if tick() {
			t.Fatal("parked a worker whose requests come and go")
		}
	}
	if reads != 0 {
		t.Fatalf("%d CPU reads while requests came and went, want none", reads)
	}

	// Still, and computing: never parked.
	for range 20 {
		used += b.parkTick
		if tick() {
			t.Fatal("parked a worker that computes")
		}
	}
	if reads == 0 {
		t.Fatal("the watch never read the CPU of a worker whose slots held still")
	}
	// Still, and its CPU reads idle, but its main thread waits in a run
	// queue (whose wait the CPU reads count only once it runs): never
	// parked.
	running = true
	for range 20 {
		if tick() {
			t.Fatal("parked a worker whose main thread waits for a CPU")
		}
	}
	running = false
	// Still and idle: parked once ParkIdle has passed since it measured.
	ticks := 1
	for ; !tick(); ticks++ {
		if ticks > 20 {
			t.Fatalf("an idle worker at its limit was not parked after %v", time.Duration(ticks)*b.parkTick)
		}
	}
	if want := int(b.cfg.ParkIdle / b.parkTick); ticks < want {
		t.Fatalf("parked after %d ticks, before ParkIdle (%d ticks)", ticks, want)
	}
}
