package worker

import (
	"errors"
	"fmt"
	"time"
)

// Slots added at run time. A supervisor always runs the Count slots that
// Start started; whoever scales the pool adds more with AddSlot while the
// load needs them and removes them with RemoveSlot. An added slot is an
// ordinary slot while it lives: its process is restarted when it exits,
// replaced by Replace, reported through the Hooks and listed by Status.

// extraSlot is a slot that AddSlot started. Guarded by Supervisor.mu.
type extraSlot struct {
	retire chan struct{} // closed by RemoveSlot: stop the process, end the slot
	done   chan struct{} // closed once the slot's goroutine has ended
	gone   bool          // removed: left out of Status, its id free again
}

// errStopped is AddSlot's answer once Stop has been called.
var errStopped = errors.New("the supervisor is stopping")

// AddSlot starts one more worker slot and returns its id: the lowest id
// above Count that no slot has. Its process gets that id as WORKER_ID
// (WORKER_COUNT stays Count). It fails once Stop has been called.
func (s *Supervisor) AddSlot() (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.stop:
		return 0, errStopped
	default:
	}
	if s.extra == nil {
		s.extra = map[int]*extraSlot{}
	}
	id := s.spec.Count + 1
	for x := s.extra[id]; x != nil && !x.gone; x = s.extra[id] {
		id++
	}
	st := Status{ID: id, State: StateStarting, Since: time.Now()}
	if id <= len(s.slots) {
		s.slots[id-1] = st
	} else {
		s.slots = append(s.slots, st)
	}
	x := &extraSlot{retire: make(chan struct{}), done: make(chan struct{})}
	s.extra[id] = x
	// One count for run, one for closing done after it: Stop waits for
	// both.
	s.wg.Add(2)
	go func() {
		defer s.wg.Done()
		s.run(id)
		close(x.done)
	}()
	return id, nil
}

// RemoveSlot ends a slot that AddSlot started: its process is stopped
// gracefully (SIGTERM to its group, SIGKILL after StopTimeout), it is not
// restarted, and the slot leaves Status. It returns once the process is
// gone. The caller drains the worker first: RemoveSlot does not wait for
// requests.
func (s *Supervisor) RemoveSlot(id int) error {
	s.mu.Lock()
	x := s.extra[id]
	if x == nil || x.gone {
		s.mu.Unlock()
		return fmt.Errorf("worker %d: not a slot that AddSlot started", id)
	}
	select {
	case <-x.retire:
	default:
		close(x.retire)
	}
	s.mu.Unlock()
	<-x.done
	s.mu.Lock()
	x.gone = true
	s.mu.Unlock()
	return nil
}

// Slots is the number of worker slots now: Count, and those AddSlot
// added that RemoveSlot has not removed.
func (s *Supervisor) Slots() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.spec.Count
	for _, x := range s.extra {
		if !x.gone {
			n++
		}
	}
	return n
}

// retired is closed when slot id is to end; nil (never ready) for the
// slots Start started.
func (s *Supervisor) retired(id int) <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if x := s.extra[id]; x != nil {
		return x.retire
	}
	return nil
}

// removedLocked reports whether slot id was removed; s.mu is held.
func (s *Supervisor) removedLocked(id int) bool {
	x := s.extra[id]
	return x != nil && x.gone
}
