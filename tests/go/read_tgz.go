// Extracts a tar.gz the way Wings reads an incoming transfer: Go's
// compress/gzip reader (multistream, checks every member's CRC and length)
// under archive/tar. Used by tests/archive_go.rs to prove ferry's archives
// are readable by the reference daemon's stack.
//
// usage: read_tgz ARCHIVE DEST
// Prints the entry count; exits non-zero with the reason on any error,
// including bytes after the tar end that do not decompress cleanly.
package main

import (
	"archive/tar"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

type stamp struct {
	path  string
	mode  os.FileMode
	mtime time.Time
	dir   bool
}

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "read_tgz: "+format+"\n", args...)
	os.Exit(1)
}

func main() {
	if len(os.Args) != 3 {
		fail("usage: read_tgz ARCHIVE DEST")
	}
	f, err := os.Open(os.Args[1])
	if err != nil {
		fail("%v", err)
	}
	defer f.Close()
	dest := os.Args[2]
	gz, err := gzip.NewReader(f)
	if err != nil {
		fail("gzip header: %v", err)
	}
	tr := tar.NewReader(gz)
	var stamps []stamp
	entries := 0
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			fail("tar: %v", err)
		}
		entries++
		name := filepath.Clean(h.Name)
		if filepath.IsAbs(name) || name == ".." || strings.HasPrefix(name, "../") {
			fail("unsafe name %q", h.Name)
		}
		p := filepath.Join(dest, name)
		mode := os.FileMode(h.Mode).Perm()
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(p, 0o700); err != nil {
				fail("%v", err)
			}
			stamps = append(stamps, stamp{p, mode, h.ModTime, true})
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
				fail("%v", err)
			}
			out, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
			if err != nil {
				fail("%v", err)
			}
			n, err := io.Copy(out, tr)
			if err != nil {
				fail("%s: %v", h.Name, err)
			}
			if n != h.Size {
				fail("%s: %d bytes, header says %d", h.Name, n, h.Size)
			}
			if err := out.Close(); err != nil {
				fail("%v", err)
			}
			stamps = append(stamps, stamp{p, mode, h.ModTime, false})
		case tar.TypeSymlink:
			if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
				fail("%v", err)
			}
			if err := os.Symlink(h.Linkname, p); err != nil {
				fail("%v", err)
			}
		default:
			fail("%s: unexpected entry type %q", h.Name, h.Typeflag)
		}
	}
	// Whatever follows the tar end marker must still be valid gzip: reading
	// to the end makes the reader check the last member's CRC and length.
	if _, err := io.Copy(io.Discard, gz); err != nil {
		fail("after the tar end: %v", err)
	}
	if err := gz.Close(); err != nil {
		fail("%v", err)
	}
	// Deepest first, so setting a parent's mtime comes after its children.
	sort.SliceStable(stamps, func(i, j int) bool {
		return strings.Count(stamps[i].path, "/") > strings.Count(stamps[j].path, "/")
	})
	for _, s := range stamps {
		if err := os.Chmod(s.path, s.mode); err != nil {
			fail("%v", err)
		}
		if err := os.Chtimes(s.path, s.mtime, s.mtime); err != nil {
			fail("%v", err)
		}
	}
	fmt.Println(entries)
}
