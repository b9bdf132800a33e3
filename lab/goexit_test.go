package lab

import "runtime"

var runtimeGoexit = runtime.Goexit
