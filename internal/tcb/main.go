// Command tcb counts tamavisor's trusted computing base: the source lines of
// every package linked into the bare-metal binary (`make tcb`).
//
// The package set is the transitive import closure of the module's root
// package under the build configuration of tamavisor.elf (GOOS=tamago,
// GOARCH=amd64, cgo off). The host toolchain cannot run `go list -deps` for
// GOOS=tamago, so tcb walks the imports itself: go/build's Context.ImportDir
// selects each directory's files as the tamago build does (//go:build lines,
// _GOOS/_GOARCH file name suffixes, no _test.go files) and parses their
// imports. Packages of the main module are looked up in the module tree;
// packages of modules required in go.mod are looked up in the module cache
// (`go list -m`); standard library packages, which come with the TamaGo
// toolchain, are listed by number only. The TamaGo runtime's "runtime/goos"
// import resolves to GOOSPKG's goos package, as the TamaGo compiler does.
//
// A counted line is a line of a non-test .go file or of a .s file that holds
// at least one non-space character outside comments (// and /* */, in Go
// and in Go assembly; a "//" inside a string is not a comment). Blank lines
// and comment-only lines are not counted. C headers (.h) that assembly
// files include are counted as assembly.
//
// Usage:
//
//	go run ./internal/tcb [-md] [-dir moduleroot] [-goospkg path]
package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"go/build"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"text/tabwriter"
)

// defaultGOOSPKG is the Makefile's GOOSPKG.
const defaultGOOSPKG = "github.com/usbarmory/tamago"

// generated matches the Go convention's marker of a generated file.
var generated = regexp.MustCompile(`(?m)^// Code generated .* DO NOT EDIT\.$`)

func main() {
	md := flag.Bool("md", false, "print Markdown tables")
	dir := flag.String("dir", "", "module root (default: the directory holding go.mod, from the working directory up)")
	goospkg := flag.String("goospkg", defaultGOOSPKG, "GOOSPKG: the package that provides runtime/goos")
	flag.Parse()

	root := *dir
	if root == "" {
		var err error
		if root, err = findModuleRoot(); err != nil {
			fatal(err)
		}
	}
	r, err := Count(root, *goospkg, goListModule)
	if err != nil {
		fatal(err)
	}
	if *md {
		r.WriteMarkdown(os.Stdout)
	} else {
		r.WriteText(os.Stdout)
	}
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "tcb:", err)
	os.Exit(1)
}

// Lines is a line count.
type Lines struct {
	Go, Asm int
}

// Total is Go plus assembly lines.
func (l Lines) Total() int { return l.Go + l.Asm }

func (l *Lines) add(m Lines) { l.Go += m.Go; l.Asm += m.Asm }

// Package is one counted package.
type Package struct {
	ImportPath string
	Module     string // module path
	Dir        string
	Files      []string // counted files, relative to Dir
	Lines      Lines
	Generated  int // lines (of Lines) in generated files
}

// Module is a required module that the binary links.
type Module struct {
	Path, Version, Dir string
}

// Report is the result of Count.
type Report struct {
	Module     string     // main module path
	Own        []*Package // main module packages, sorted by import path
	ThirdParty []*Package // packages of required modules, sorted
	Modules    []Module   // the required modules those come from
	Std        []string   // standard library packages imported (not counted)
	Missing    []string   // third-party packages whose source was not found
}

// moduleLookup returns a required module's version and source directory
// ("" if it is not in the module cache).
type moduleLookup func(root, path string) (version, dir string, err error)

// Count walks the imports of the root package of the module at root and
// counts every package the bare-metal build links.
func Count(root, goospkg string, lookup moduleLookup) (*Report, error) {
	gomod, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		return nil, err
	}
	modPath, requires := parseGoMod(gomod)
	if modPath == "" {
		return nil, fmt.Errorf("%s/go.mod: no module line", root)
	}

	ctxt := build.Default
	ctxt.GOOS, ctxt.GOARCH = "tamago", "amd64"
	ctxt.CgoEnabled = false
	ctxt.BuildTags = []string{"tamago"}
	ctxt.Dir = root

	r := &Report{Module: modPath}
	modules := map[string]*Module{} // looked up required modules
	seen := map[string]bool{}
	queue := []string{modPath}
	seen[modPath] = true
	for len(queue) > 0 {
		path := queue[0]
		queue = queue[1:]

		var (
			dir, mod string
			own      bool
		)
		switch {
		case path == modPath || strings.HasPrefix(path, modPath+"/"):
			own, mod = true, modPath
			dir = filepath.Join(root, filepath.FromSlash(strings.TrimPrefix(path, modPath)))
		default:
			mod = longestPrefix(requires, path)
			if mod == "" {
				if isStd(path) {
					r.Std = append(r.Std, path)
				} else {
					r.Missing = append(r.Missing, path+" (no module in go.mod provides it)")
				}
				continue
			}
			m := modules[mod]
			if m == nil {
				v, d, err := lookup(root, mod)
				if err != nil {
					return nil, err
				}
				m = &Module{Path: mod, Version: v, Dir: d}
				modules[mod] = m
			}
			if m.Dir == "" {
				r.Missing = append(r.Missing, path+" (module source not in the module cache: go mod download "+mod+")")
				continue
			}
			dir = filepath.Join(m.Dir, filepath.FromSlash(strings.TrimPrefix(path, mod)))
		}

		bp, err := ctxt.ImportDir(dir, 0)
		if err != nil {
			return nil, fmt.Errorf("package %s: %w", path, err)
		}
		p := &Package{ImportPath: path, Module: mod, Dir: dir}
		for _, set := range []struct {
			files []string
			asm   bool
		}{{bp.GoFiles, false}, {bp.SFiles, true}, {bp.HFiles, true}} {
			for _, f := range set.files {
				src, err := os.ReadFile(filepath.Join(dir, f))
				if err != nil {
					return nil, err
				}
				n := CountLines(src)
				if generated.Match(src) {
					p.Generated += n
				}
				if set.asm {
					p.Lines.Asm += n
				} else {
					p.Lines.Go += n
				}
				p.Files = append(p.Files, f)
			}
		}
		if own {
			r.Own = append(r.Own, p)
		} else {
			r.ThirdParty = append(r.ThirdParty, p)
		}

		for _, imp := range bp.Imports {
			if imp == "runtime/goos" && goospkg != "" {
				imp = goospkg + "/goos"
			}
			if imp == "C" || seen[imp] {
				continue
			}
			seen[imp] = true
			queue = append(queue, imp)
		}
	}

	byPath := func(ps []*Package) {
		sort.Slice(ps, func(i, j int) bool { return ps[i].ImportPath < ps[j].ImportPath })
	}
	byPath(r.Own)
	byPath(r.ThirdParty)
	for _, m := range modules {
		r.Modules = append(r.Modules, *m)
	}
	sort.Slice(r.Modules, func(i, j int) bool { return r.Modules[i].Path < r.Modules[j].Path })
	sort.Strings(r.Std)
	sort.Strings(r.Missing)
	return r, nil
}

// isStd reports whether an import path not provided by any module is a
// standard library path (no dot in its first element).
func isStd(path string) bool {
	first, _, _ := strings.Cut(path, "/")
	return !strings.Contains(first, ".")
}

// longestPrefix returns the module among mods whose path is path or a
// prefix of it at a "/" boundary, the longest such; "" if none.
func longestPrefix(mods []string, path string) string {
	best := ""
	for _, m := range mods {
		if (path == m || strings.HasPrefix(path, m+"/")) && len(m) > len(best) {
			best = m
		}
	}
	return best
}

// parseGoMod returns the module path and the required module paths of a
// go.mod file (the module and require directives only).
func parseGoMod(data []byte) (module string, requires []string) {
	inBlock := false
	for _, line := range strings.Split(string(data), "\n") {
		if i := strings.Index(line, "//"); i >= 0 {
			line = line[:i]
		}
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		switch {
		case inBlock && f[0] == ")":
			inBlock = false
		case inBlock:
			requires = append(requires, strings.Trim(f[0], `"`))
		case f[0] == "module" && len(f) >= 2:
			module = strings.Trim(f[1], `"`)
		case f[0] == "require" && len(f) >= 2 && f[1] == "(":
			inBlock = true
		case f[0] == "require" && len(f) >= 3:
			requires = append(requires, strings.Trim(f[1], `"`))
		}
	}
	return module, requires
}

// goListModule asks the go command for a required module's version and
// directory in the module cache.
func goListModule(root, path string) (version, dir string, err error) {
	cmd := exec.Command("go", "list", "-m", "-f", "{{.Version}}\t{{.Dir}}", path)
	cmd.Dir = root
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", "", fmt.Errorf("go list -m %s: %v: %s", path, err, strings.TrimSpace(stderr.String()))
	}
	version, dir, _ = strings.Cut(strings.TrimSpace(string(out)), "\t")
	return version, dir, nil
}

// findModuleRoot returns the nearest directory at or above the working
// directory that holds a go.mod.
func findModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod in the working directory or above")
		}
		dir = parent
	}
}

// CountLines returns the number of lines of Go or Go assembly source that
// hold a non-space character outside comments. It follows Go's lexical
// rules: // and /* */ comments, and "..." strings, '...' rune literals and
// `...` raw strings, in which comment markers are text. An unterminated
// "..." or '...' ends at the end of its line.
func CountLines(src []byte) int {
	const (
		code = iota
		lineComment
		blockComment
		str  // "..."
		char // '...'
		raw  // `...`
	)
	state := code
	n := 0
	counted := false // the current line already counts
	for i := 0; i < len(src); i++ {
		c := src[i]
		if c == '\n' {
			counted = false
			if state == lineComment || state == str || state == char {
				state = code
			}
			continue
		}
		switch state {
		case code:
			if c == '/' && i+1 < len(src) && src[i+1] == '/' {
				state = lineComment
				i++
				continue
			}
			if c == '/' && i+1 < len(src) && src[i+1] == '*' {
				state = blockComment
				i++
				continue
			}
			switch c {
			case '"':
				state = str
			case '\'':
				state = char
			case '`':
				state = raw
			}
		case lineComment:
			continue
		case blockComment:
			if c == '*' && i+1 < len(src) && src[i+1] == '/' {
				state = code
				i++
			}
			continue
		case str, char:
			if c == '\\' && i+1 < len(src) && src[i+1] != '\n' {
				i++ // the escaped character is text too
			} else if (state == str && c == '"') || (state == char && c == '\'') {
				state = code
			}
		case raw:
			if c == '`' {
				state = code
			}
		}
		if !counted && !isSpace(c) {
			counted = true
			n++
		}
	}
	return n
}

func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\r' || c == '\f' || c == '\v'
}

// row is one table line.
type row struct {
	name  string
	lines Lines
}

func rows(ps []*Package) (rs []row, total Lines) {
	for _, p := range ps {
		rs = append(rs, row{p.ImportPath, p.Lines})
		total.add(p.Lines)
	}
	return rs, total
}

func (r *Report) sections() (ownRows []row, own Lines, tpRows []row, tp Lines) {
	ownRows, own = rows(r.Own)
	tpRows, tp = rows(r.ThirdParty)
	return
}

func (r *Report) moduleList() string {
	var s []string
	for _, m := range r.Modules {
		s = append(s, m.Path+" "+m.Version)
	}
	return strings.Join(s, ", ")
}

// WriteText prints the report as aligned plain-text tables.
func (r *Report) WriteText(w io.Writer) {
	ownRows, own, tpRows, tp := r.sections()
	table := func(title string, rs []row, total Lines) {
		fmt.Fprintf(w, "%s\n\n", title)
		tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintf(tw, "package\tGo\tasm\ttotal\t\n")
		for _, x := range rs {
			fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t\n", x.name, x.lines.Go, x.lines.Asm, x.lines.Total())
		}
		fmt.Fprintf(tw, "total (%d packages)\t%d\t%d\t%d\t\n", len(rs), total.Go, total.Asm, total.Total())
		tw.Flush()
		fmt.Fprintln(w)
	}
	table("tamavisor (module "+r.Module+"), lines of code in the bare-metal build", ownRows, own)
	table("third-party code linked in ("+r.moduleList()+")", tpRows, tp)
	all := own
	all.add(tp)
	fmt.Fprintf(w, "TCB without the Go runtime and standard library: %d lines (%d Go, %d asm)\n", all.Total(), all.Go, all.Asm)
	r.writeNotes(w, "")
}

// WriteMarkdown prints the report as Markdown tables.
func (r *Report) WriteMarkdown(w io.Writer) {
	ownRows, own, tpRows, tp := r.sections()
	table := func(title string, rs []row, total Lines) {
		fmt.Fprintf(w, "%s\n\n", title)
		fmt.Fprintf(w, "| package | Go | asm | total |\n|---|---:|---:|---:|\n")
		for _, x := range rs {
			fmt.Fprintf(w, "| `%s` | %d | %d | %d |\n", x.name, x.lines.Go, x.lines.Asm, x.lines.Total())
		}
		fmt.Fprintf(w, "| **total** (%d packages) | **%d** | **%d** | **%d** |\n\n", len(rs), total.Go, total.Asm, total.Total())
	}
	table("tamavisor (module `"+r.Module+"`), lines of code in the bare-metal build:", ownRows, own)
	table("Third-party code linked in ("+r.moduleList()+"):", tpRows, tp)
	all := own
	all.add(tp)
	fmt.Fprintf(w, "TCB without the Go runtime and standard library: **%d** lines (%d Go, %d asm).\n", all.Total(), all.Go, all.Asm)
	r.writeNotes(w, "\n")
}

func (r *Report) writeNotes(w io.Writer, sep string) {
	for _, p := range append(append([]*Package{}, r.Own...), r.ThirdParty...) {
		if p.Generated > 0 {
			fmt.Fprintf(w, "%sOf %s's %d lines, %d are in generated files (\"Code generated ... DO NOT EDIT.\").\n",
				sep, p.ImportPath, p.Lines.Total(), p.Generated)
		}
	}
	fmt.Fprintf(w, "%sNot counted: the Go runtime and standard library of the TamaGo toolchain; counted packages import %d of its packages directly (%s).\n",
		sep, len(r.Std), strings.Join(r.Std, " "))
	for _, m := range r.Missing {
		fmt.Fprintf(w, "%sNot found: %s\n", sep, m)
	}
}
