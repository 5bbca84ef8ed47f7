// Package kernel is tamavisor's policy: virtual machines, the vCPU run loop
// and its exit dispatcher, the CPU model guests see (CPUID and MSRs), port
// I/O routed to device models, hypercalls, and guest image loading.
//
// The hardware boundary is package svm; the board is package boot. All of
// this package is plain Go: the world switch reaches it through Platform, so
// host tests drive the whole exit path with scripted exits.
//
// Data flows one way: exit -> dispatcher -> handler/device -> VMCB update ->
// resume.
package kernel
