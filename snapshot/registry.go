package snapshot

import (
	"fmt"
	"sort"
)

// DecodeFunc decodes a chunk body of one version into that version's
// in-memory form. It should use the Decoder's bounds-checked reads and
// return d.Finish() (or another error) when the body is invalid.
type DecodeFunc func(d *Decoder) (any, error)

// UpgradeFunc converts the in-memory form of version v into the form of
// version v+1.
type UpgradeFunc func(v any) (any, error)

// Codec describes how to load one chunk type.
type Codec struct {
	// Type is the chunk type name.
	Type string
	// Current is the newest version this build writes and understands.
	// A chunk with a higher version is refused.
	Current uint16
	// Decoders holds a decoder per accepted version. If nil, the chunk is
	// raw: every version 1..Current is accepted and the value is the body
	// ([]byte) for the owner to interpret (device models do this through
	// UnmarshalState(version, body)).
	Decoders map[uint16]DecodeFunc
	// Upgrades[v] converts version v's form to version v+1's. An older
	// chunk is decoded with Decoders[v] then upgraded step by step to
	// Current. Ignored for raw codecs.
	Upgrades map[uint16]UpgradeFunc
}

// Registry maps chunk types to codecs. The zero value is not usable; use
// NewRegistry.
type Registry struct {
	codecs map[string]*Codec
}

// NewRegistry returns a registry that knows the core chunk types
// (manifest and chain; ram and end are handled by the reader itself).
func NewRegistry() *Registry {
	r := &Registry{codecs: make(map[string]*Codec)}
	for _, c := range []Codec{manifestCodec, chainCodec} {
		r.codecs[c.Type] = &c
	}
	return r
}

// Register adds a codec. It checks that every version from the oldest
// decoder to Current can be decoded and upgraded to Current.
func (r *Registry) Register(c Codec) error {
	if err := checkType(c.Type); err != nil {
		return fmt.Errorf("snapshot: register: %v", err)
	}
	if c.Type == TypeRAM || c.Type == TypeEnd {
		return fmt.Errorf("snapshot: register: %q is a reserved chunk type", c.Type)
	}
	if _, dup := r.codecs[c.Type]; dup {
		return fmt.Errorf("snapshot: register: chunk type %q already registered", c.Type)
	}
	if c.Current == 0 {
		return fmt.Errorf("snapshot: register %q: current version 0", c.Type)
	}
	if c.Decoders != nil {
		if c.Decoders[c.Current] == nil {
			return fmt.Errorf("snapshot: register %q: no decoder for current version %d", c.Type, c.Current)
		}
		for v := range c.Decoders {
			if v == 0 || v > c.Current {
				return fmt.Errorf("snapshot: register %q: decoder for version %d outside 1..%d", c.Type, v, c.Current)
			}
			for u := v; u < c.Current; u++ {
				if c.Upgrades[u] == nil {
					return fmt.Errorf("snapshot: register %q: no upgrade from version %d to %d", c.Type, u, u+1)
				}
			}
		}
	}
	cc := c
	r.codecs[c.Type] = &cc
	return nil
}

// MustRegister is Register that panics on error, for package initialisation
// with constant codecs.
func (r *Registry) MustRegister(c Codec) {
	if err := r.Register(c); err != nil {
		panic(err)
	}
}

// RegisterRaw registers a chunk type whose body is handed over as bytes for
// versions 1..current, e.g. a device model state ("dev:uart16550") that the
// device decodes itself with UnmarshalState(version, body).
func (r *Registry) RegisterRaw(typ string, current uint16) error {
	return r.Register(Codec{Type: typ, Current: current})
}

// Types returns the registered chunk types, sorted.
func (r *Registry) Types() []string {
	t := make([]string, 0, len(r.codecs))
	for k := range r.codecs {
		t = append(t, k)
	}
	sort.Strings(t)
	return t
}

// Lookup returns the codec for typ, or nil.
func (r *Registry) Lookup(typ string) *Codec { return r.codecs[typ] }

// decode decodes body of the given version and upgrades it to the codec's
// current version.
func (c *Codec) decode(version uint16, body []byte) (any, error) {
	if version == 0 {
		return nil, fmt.Errorf("%w: version 0", ErrVersion)
	}
	if version > c.Current {
		return nil, fmt.Errorf("%w: version %d is newer than this reader supports (%d)", ErrVersion, version, c.Current)
	}
	if c.Decoders == nil {
		return body, nil
	}
	dec := c.Decoders[version]
	if dec == nil {
		return nil, fmt.Errorf("%w: version %d is no longer supported (current %d)", ErrVersion, version, c.Current)
	}
	v, err := dec(NewDecoder(body))
	if err != nil {
		return nil, fmt.Errorf("%w: decode version %d: %v", ErrCorrupt, version, err)
	}
	for u := version; u < c.Current; u++ {
		v, err = c.Upgrades[u](v)
		if err != nil {
			return nil, fmt.Errorf("upgrade from version %d: %w", u, err)
		}
	}
	return v, nil
}
