package perf

// The benchmark's BPF programs are compiled for the little-endian BPF target
// only, like firmware's. Regenerate with `go generate ./perf` (Debian's
// clang 14 finds asm/types.h only through the multiarch include directory);
// the generated files are committed, so building weir needs no clang.
//
//go:generate go tool bpf2go -target bpfel -cflags "-Wall -Werror -I/usr/include/x86_64-linux-gnu" generator generator.c
//go:generate go tool bpf2go -target bpfel -cflags "-Wall -Werror -I/usr/include/x86_64-linux-gnu" sink sink.c
//go:generate go tool bpf2go -target bpfel -cflags "-Wall -Werror -I/usr/include/x86_64-linux-gnu" reference reference.c
