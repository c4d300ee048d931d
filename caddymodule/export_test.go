package caddymodule

// WaitDraining waits for the pools that reloads replaced to finish
// stopping in the background, so that a test ends with no goroutine of
// ours running.
func WaitDraining() { draining.Wait() }
