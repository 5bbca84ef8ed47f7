module tamavisor

go 1.26.0

require (
	github.com/usbarmory/tamago v1.26.0 // indirect
	golang.org/x/arch v0.33.0
)

tool github.com/usbarmory/tamago/cmd/tamago
