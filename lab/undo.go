package lab

import (
	"errors"
	"fmt"
	"sync"
)

// undoStack records how to take back each step of a set-up, so that a
// topology torn down after a failed constructor and one closed by its user
// go through the same code, in reverse order of creation.
type undoStack struct {
	mu    sync.Mutex
	steps []undoStep
	done  bool
}

type undoStep struct {
	what string
	fn   func() error
}

// push records fn as the way to take back the step described by what.
func (u *undoStack) push(what string, fn func() error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.steps = append(u.steps, undoStep{what: what, fn: fn})
}

// run takes back every recorded step, newest first. It keeps going after a
// failure (a half-removed lab is worse than a noisy one) and reports all
// failures together. Only the first call does anything.
func (u *undoStack) run() error {
	u.mu.Lock()
	if u.done {
		u.mu.Unlock()
		return nil
	}
	u.done = true
	steps := u.steps
	u.steps = nil
	u.mu.Unlock()

	var errs []error
	for i := len(steps) - 1; i >= 0; i-- {
		if err := steps[i].fn(); err != nil {
			errs = append(errs, fmt.Errorf("undo %s: %w", steps[i].what, err))
		}
	}
	return errors.Join(errs...)
}
