package firmware

// The programs are compiled for the little-endian BPF target only (bpfel:
// amd64, arm64 and the other little-endian architectures); weir does not run
// on big-endian machines. Regenerate with `go generate ./firmware` (needs
// clang and llvm-strip; Debian's clang 14 finds asm/types.h only through the
// multiarch include directory). The generated files are committed.
//
//go:generate go tool bpf2go -target bpfel -cflags "-Wall -Werror -I/usr/include/x86_64-linux-gnu" redirect redirect.c
//go:generate go tool bpf2go -target bpfel -cflags "-Wall -Werror -I/usr/include/x86_64-linux-gnu" decap decap.c
