// Command tamavisor-image stamps and checks guest images
// (docs/guest-abi.md, "Guest image").
//
//	tamavisor-image stamp FILE...  fill in the payload size and CRC-32C of
//	                               version 2 images an assembler wrote
//	tamavisor-image check FILE...  parse each image as tamavisor does and
//	                               print its header, or why it is refused
//
// Exit status: 0 ok, 1 an image was refused or could not be written, 2 usage.
package main

import (
	"fmt"
	"io"
	"os"

	"tamavisor/kernel"
)

const usage = `usage: tamavisor-image COMMAND FILE...

commands:
  stamp FILE...   fill in the payload size and CRC-32C of version 2 images an
                  assembler wrote (guests/common.inc leaves them 0)
  check FILE...   parse images as tamavisor does and print their headers, or
                  why tamavisor refuses them
  help            this text (also -h, --help, help COMMAND)

exit status: 0 ok, 1 an image was refused or could not be written, 2 usage error
`

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) >= 1 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") ||
		len(args) == 2 && (args[1] == "-h" || args[1] == "--help") {
		fmt.Fprint(stdout, usage)
		return 0
	}
	if len(args) < 2 || args[0] != "stamp" && args[0] != "check" {
		fmt.Fprint(stderr, usage)
		return 2
	}
	status := 0
	for _, file := range args[1:] {
		if err := do(args[0], file, stdout); err != nil {
			fmt.Fprintf(stderr, "tamavisor-image: %s: %v\n", file, err)
			status = 1
		}
	}
	return status
}

func do(cmd, file string, stdout io.Writer) error {
	b, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	if cmd == "stamp" {
		if err := kernel.StampImage(b); err != nil {
			return err
		}
		if _, err := kernel.ParseImage(b); err != nil {
			return err
		}
		return os.WriteFile(file, b, 0o644)
	}
	img, err := kernel.ParseImage(b)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: %q, %d-bit, %d bytes at %#x, entry %#x, %d KiB RAM\n",
		file, img.Name, img.Mode, len(img.Payload), img.LoadGPA, img.Entry, img.MemSize>>10)
	return nil
}
