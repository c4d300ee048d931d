//go:build unix

package worker_test

import (
	"encoding/json"
	"syscall"
	"testing"
	"time"

	"github.com/caddy-workerpool/caddy-workerpool/internal/testworker"
	"github.com/caddy-workerpool/caddy-workerpool/worker"
)

// workerID asks the worker for the WORKER_ID it was given; "" if it does
// not answer.
func workerID(inst *worker.Instance) string {
	resp, err := client(inst).Get("http://worker/")
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	var r testworker.Reply
	if json.NewDecoder(resp.Body).Decode(&r) != nil {
		return ""
	}
	return r.Worker
}

func ids(st []worker.Status) []int {
	var out []int
	for _, s := range st {
		out = append(out, s.ID)
	}
	return out
}

// A slot added at run time runs, restarts and stops like the others;
// removed, its process stops and its id is free for the next one.
func TestAddAndRemoveSlots(t *testing.T) {
	s, rec := start(t, worker.Spec{Command: testworker.Command(), Env: testworker.Env("serve"), Count: 1})
	id, err := s.AddSlot()
	if err != nil || id != 2 {
		t.Fatalf("AddSlot = %d, %v; want slot 2", id, err)
	}
	if s.Slots() != 2 || s.Count() != 1 {
		t.Fatalf("Slots %d, Count %d; want 2 and 1", s.Slots(), s.Count())
	}
	testworker.Eventually(t, 10*time.Second, "the added slot's worker answering as WORKER_ID 2", func() bool {
		inst := rec.current()[2]
		return inst != nil && workerID(inst) == "2"
	})
	if got := ids(s.Status()); len(got) != 2 || got[1] != 2 {
		t.Fatalf("Status ids %v, want [1 2]", got)
	}

	// It is restarted when it dies, like any slot.
	first := rec.current()[2]
	if err := syscall.Kill(first.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	testworker.Eventually(t, 10*time.Second, "the added slot restarted", func() bool {
		inst := rec.current()[2]
		return inst != first && servedPID(inst) == inst.PID
	})

	third, err := s.AddSlot()
	if err != nil || third != 3 {
		t.Fatalf("AddSlot = %d, %v; want slot 3", third, err)
	}
	testworker.Eventually(t, 10*time.Second, "slot 3 answering", func() bool {
		inst := rec.current()[3]
		return inst != nil && servedPID(inst) == inst.PID
	})
	two := rec.current()[2]
	if err := s.RemoveSlot(2); err != nil {
		t.Fatal(err)
	}
	if testworker.Alive(two.PID) {
		t.Fatalf("pid %d of the removed slot still runs", two.PID)
	}
	select {
	case <-two.Exited():
	default:
		t.Fatal("RemoveSlot returned before the process exited")
	}
	if got := ids(s.Status()); len(got) != 2 || got[0] != 1 || got[1] != 3 || s.Slots() != 2 {
		t.Fatalf("after removing slot 2: Status ids %v, Slots %d", got, s.Slots())
	}
	// The freed id is the next one added.
	again, err := s.AddSlot()
	if err != nil || again != 2 {
		t.Fatalf("AddSlot after a removal = %d, %v; want 2", again, err)
	}
	testworker.Eventually(t, 10*time.Second, "slot 2 answering again", func() bool {
		inst := rec.current()[2]
		return inst != two && inst != nil && servedPID(inst) == inst.PID
	})

	if err := s.RemoveSlot(1); err == nil {
		t.Fatal("RemoveSlot(1) removed a slot that Start started")
	}
	if err := s.RemoveSlot(9); err == nil {
		t.Fatal("RemoveSlot(9) removed a slot that does not exist")
	}

	// Stop ends the added slots too.
	var pids []int
	for _, inst := range rec.current() {
		pids = append(pids, inst.PID)
	}
	s.Stop()
	for _, pid := range pids {
		if testworker.Alive(pid) {
			t.Fatalf("pid %d survived Stop", pid)
		}
	}
	if _, err := s.AddSlot(); err == nil {
		t.Fatal("AddSlot after Stop started a slot")
	}
}

// A slot removed while it waits to restart ends without starting again.
func TestRemoveSlotDuringBackoff(t *testing.T) {
	s, rec := start(t, worker.Spec{Command: testworker.Command(), Env: testworker.Env("exit"), Count: 1,
		Backoff: worker.Backoff{Initial: time.Hour, Max: time.Hour}})
	id, err := s.AddSlot()
	if err != nil {
		t.Fatal(err)
	}
	testworker.Eventually(t, 10*time.Second, "the added slot in backoff", func() bool {
		for _, st := range s.Status() {
			if st.ID == id && st.State == worker.StateBackoff {
				return true
			}
		}
		return false
	})
	n := rec.startedCount()
	if err := s.RemoveSlot(id); err != nil {
		t.Fatal(err)
	}
	if rec.startedCount() != n || len(s.Status()) != 1 {
		t.Fatalf("after RemoveSlot: %d starts (was %d), status %+v", rec.startedCount(), n, s.Status())
	}
}
