package pool

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
	"go.uber.org/zap"
)

// DefaultWatchDebounce is how long file changes must settle before a
// watch triggers a rolling restart: a deploy or an editor writes several
// files in a burst.
const DefaultWatchDebounce = 500 * time.Millisecond

// watcher restarts the pool, one worker at a time, when a file matching
// one of its globs changes. Its goroutine is started by Pool.Start and
// ended by Pool.Stop.
type watcher struct {
	globs    []string
	debounce time.Duration
	fs       *fsnotify.Watcher
	cancel   context.CancelFunc
	done     chan struct{}
}

// newWatcher watches the directories the globs (relative to dir) name.
func newWatcher(globs []string, dir string, debounce time.Duration) (*watcher, error) {
	w := &watcher{debounce: debounce, done: make(chan struct{})}
	if w.debounce <= 0 {
		w.debounce = DefaultWatchDebounce
	}
	fs, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, fmt.Errorf("watch: %w", err)
	}
	w.fs = fs
	dirs := map[string]bool{}
	for _, g := range globs {
		if !filepath.IsAbs(g) && dir != "" {
			g = filepath.Join(dir, g)
		}
		g, err = filepath.Abs(g)
		if err != nil {
			fs.Close()
			return nil, fmt.Errorf("watch %q: %w", g, err)
		}
		if _, err := filepath.Match(g, ""); err != nil {
			fs.Close()
			return nil, fmt.Errorf("watch %q: %w", g, err)
		}
		w.globs = append(w.globs, g)
		// The files' directories; a new file appears as an event there.
		parent := filepath.Dir(g)
		matches, _ := filepath.Glob(parent)
		if !strings.ContainsAny(parent, "*?[") {
			matches = []string{parent}
		}
		for _, d := range matches {
			dirs[d] = true
		}
	}
	if len(dirs) == 0 {
		fs.Close()
		return nil, fmt.Errorf("watch %v: no directory to watch matches", globs)
	}
	for d := range dirs {
		if err := fs.Add(d); err != nil {
			fs.Close()
			return nil, fmt.Errorf("watch %s: %w", d, err)
		}
	}
	return w, nil
}

func (w *watcher) matches(path string) bool {
	for _, g := range w.globs {
		if ok, _ := filepath.Match(g, path); ok {
			return true
		}
	}
	return false
}

func (w *watcher) start(s *spawner) {
	ctx, cancel := context.WithCancel(context.Background())
	w.cancel = cancel
	go w.run(ctx, s.p)
}

func (w *watcher) stop() {
	if w.cancel != nil {
		w.cancel()
		<-w.done
	}
	_ = w.fs.Close()
}

func (w *watcher) run(ctx context.Context, p *Pool) {
	defer close(w.done)
	settle := time.NewTimer(time.Hour)
	settle.Stop()
	var changed string
	for {
		select {
		case <-ctx.Done():
			settle.Stop()
			return
		case ev, ok := <-w.fs.Events:
			if !ok {
				return
			}
			if ev.Op&(fsnotify.Write|fsnotify.Create|fsnotify.Remove|fsnotify.Rename) != 0 && w.matches(ev.Name) {
				changed = ev.Name
				settle.Reset(w.debounce)
			}
		case err, ok := <-w.fs.Errors:
			if !ok {
				return
			}
			p.log.Warn("watch", zap.Error(err))
		case <-settle.C:
			p.log.Info("files changed; rolling restart", zap.String("file", changed))
			if n, err := p.RollingRestart(ctx); err != nil && ctx.Err() == nil {
				p.log.Error("rolling restart after a file change stopped", zap.Int("restarted", n), zap.Error(err))
			}
		}
	}
}
