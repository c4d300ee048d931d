package worker

import (
	"bytes"
	"sync/atomic"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// maxLine bounds one logged line; a longer one is logged in pieces so a
// worker that prints without newlines cannot grow our memory.
const maxLine = 16 << 10

// lineLogger turns a worker's output stream into one log entry per line.
// os/exec writes to it from a single goroutine per stream. Lines carry
// the worker's pid, which is known only once the process has started:
// Write waits for setLogger, which comes a moment after the start.
type lineLogger struct {
	log   atomic.Pointer[zap.Logger]
	ready chan struct{}
	level zapcore.Level
	buf   []byte
}

func newLineLogger(level zapcore.Level) *lineLogger {
	return &lineLogger{level: level, ready: make(chan struct{})}
}

// setLogger sets the logger (once) and lets Write proceed.
func (l *lineLogger) setLogger(log *zap.Logger) {
	l.log.Store(log)
	close(l.ready)
}

func (l *lineLogger) Write(p []byte) (int, error) {
	<-l.ready
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			l.buf = append(l.buf, p...)
			for len(l.buf) >= maxLine {
				l.emit(l.buf[:maxLine])
				l.buf = append(l.buf[:0], l.buf[maxLine:]...)
			}
			break
		}
		if len(l.buf) > 0 {
			l.buf = append(l.buf, p[:i]...)
			l.emit(l.buf)
			l.buf = l.buf[:0]
		} else {
			l.emit(p[:i])
		}
		p = p[i+1:]
	}
	return n, nil
}

// flush logs a last line that had no newline.
func (l *lineLogger) flush() {
	if len(l.buf) > 0 {
		l.emit(l.buf)
		l.buf = l.buf[:0]
	}
}

func (l *lineLogger) emit(line []byte) {
	line = bytes.TrimRight(line, "\r")
	if ce := l.log.Load().Check(l.level, string(line)); ce != nil {
		ce.Write()
	}
}
