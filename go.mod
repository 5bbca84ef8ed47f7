module tamavisor

go 1.26.0

require golang.org/x/arch v0.33.0

require (
	github.com/cespare/xxhash/v2 v2.3.0 // indirect
	github.com/usbarmory/tamago v1.26.0 // indirect
	golang.org/x/crypto v0.59.0 // indirect
)

tool github.com/usbarmory/tamago/cmd/tamago
