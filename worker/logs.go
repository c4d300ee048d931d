package worker

import (
	"bytes"
	"encoding/json"
	"slices"
	"strings"
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
	if len(line) > 1 && line[0] == '{' && line[len(line)-1] == '}' {
		if l.emitJSON(line) {
			return
		}
	}
	if ce := l.log.Load().Check(l.level, string(line)); ce != nil {
		ce.Write()
	}
}

// emitJSON logs a line that is a JSON object (pino, bunyan, winston and
// most structured loggers write those) as an entry with its fields: its
// "msg" or "message" is the message and its "level", if it names one, the
// level. It reports false if the line is not a JSON object.
func (l *lineLogger) emitJSON(line []byte) bool {
	var obj map[string]any
	if json.Unmarshal(line, &obj) != nil {
		return false
	}
	msg, level := "", l.level
	fields := make([]zap.Field, 0, len(obj))
	keys := make([]string, 0, len(obj))
	for k := range obj {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		v := obj[k]
		switch k {
		case "msg", "message":
			if s, ok := v.(string); ok && msg == "" {
				msg = s
				continue
			}
		case "level":
			if lv, ok := jsonLevel(v); ok {
				level = lv
				continue
			}
		case "worker", "pid", "stream", "logger", "ts":
			// Ours, or the encoder's: keep the worker's under another name.
			k = "app_" + k
		}
		fields = append(fields, zap.Any(k, v))
	}
	if ce := l.log.Load().Check(level, msg); ce != nil {
		ce.Write(fields...)
	}
	return true
}

// jsonLevel reads a level as loggers write it: a name, or pino's and
// bunyan's numbers (10 trace … 60 fatal).
func jsonLevel(v any) (zapcore.Level, bool) {
	switch v := v.(type) {
	case string:
		switch strings.ToLower(v) {
		case "trace", "debug":
			return zapcore.DebugLevel, true
		case "info", "notice":
			return zapcore.InfoLevel, true
		case "warn", "warning":
			return zapcore.WarnLevel, true
		case "error", "fatal", "critical", "panic":
			return zapcore.ErrorLevel, true
		}
	case float64:
		switch {
		case v < 30:
			return zapcore.DebugLevel, true
		case v < 40:
			return zapcore.InfoLevel, true
		case v < 50:
			return zapcore.WarnLevel, true
		default:
			return zapcore.ErrorLevel, true
		}
	}
	return 0, false
}
