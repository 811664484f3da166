// Go's side of the interop tests (tests/archive_go.rs): reads what ferry
// produces with the standard library Wings is built on.
//
//	read_tgz ARCHIVE DEST   extracts a tar.gz with compress/gzip
//	                        (multistream, every member's CRC and length
//	                        checked) under archive/tar; prints the entry
//	                        count.
//	read_tgz serve DEST     receives one transfer the way Wings does: an
//	                        HTTP server on 127.0.0.1 (prints "port N"),
//	                        POST /api/transfers read with mime/multipart,
//	                        unknown parts skipped, the archive part hashed
//	                        with SHA-256 while it is extracted, compared
//	                        with the checksum part; answers 200 or 400 and
//	                        prints "received ENTRIES SHA256", then exits.
//
// Any error exits non-zero with the reason, including bytes after the tar
// end that do not decompress cleanly.
package main

import (
	"archive/tar"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
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
}

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "read_tgz: "+format+"\n", args...)
	os.Exit(1)
}

func main() {
	switch {
	case len(os.Args) == 3 && os.Args[1] == "serve":
		serve(os.Args[2])
	case len(os.Args) == 3:
		f, err := os.Open(os.Args[1])
		if err != nil {
			fail("%v", err)
		}
		defer f.Close()
		entries, err := extract(f, os.Args[2])
		if err != nil {
			fail("%v", err)
		}
		fmt.Println(entries)
	default:
		fail("usage: read_tgz ARCHIVE DEST | read_tgz serve DEST")
	}
}

// extract unpacks a tar.gz stream into dest and returns the entry count.
func extract(r io.Reader, dest string) (int, error) {
	gz, err := gzip.NewReader(r)
	if err != nil {
		return 0, fmt.Errorf("gzip header: %w", err)
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
			return 0, fmt.Errorf("tar: %w", err)
		}
		entries++
		name := filepath.Clean(h.Name)
		if filepath.IsAbs(name) || name == ".." || strings.HasPrefix(name, "../") {
			return 0, fmt.Errorf("unsafe name %q", h.Name)
		}
		p := filepath.Join(dest, name)
		mode := os.FileMode(h.Mode).Perm()
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			return 0, err
		}
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(p, 0o700); err != nil {
				return 0, err
			}
			stamps = append(stamps, stamp{p, mode, h.ModTime})
		case tar.TypeReg:
			out, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
			if err != nil {
				return 0, err
			}
			n, err := io.Copy(out, tr)
			if err != nil {
				return 0, fmt.Errorf("%s: %w", h.Name, err)
			}
			if n != h.Size {
				return 0, fmt.Errorf("%s: %d bytes, header says %d", h.Name, n, h.Size)
			}
			if err := out.Close(); err != nil {
				return 0, err
			}
			stamps = append(stamps, stamp{p, mode, h.ModTime})
		case tar.TypeSymlink:
			if err := os.Symlink(h.Linkname, p); err != nil {
				return 0, err
			}
		default:
			return 0, fmt.Errorf("%s: unexpected entry type %q", h.Name, h.Typeflag)
		}
	}
	// Whatever follows the tar end marker must still be valid gzip: reading
	// to the end makes the reader check the last member's CRC and length.
	if _, err := io.Copy(io.Discard, gz); err != nil {
		return 0, fmt.Errorf("after the tar end: %w", err)
	}
	if err := gz.Close(); err != nil {
		return 0, err
	}
	// Deepest first, so setting a parent's mtime comes after its children.
	sort.SliceStable(stamps, func(i, j int) bool {
		return strings.Count(stamps[i].path, "/") > strings.Count(stamps[j].path, "/")
	})
	for _, s := range stamps {
		if err := os.Chmod(s.path, s.mode); err != nil {
			return 0, err
		}
		if err := os.Chtimes(s.path, s.mtime, s.mtime); err != nil {
			return 0, err
		}
	}
	return entries, nil
}

// receive handles one incoming transfer body; returns the entry count and
// the archive's SHA-256, or why it was refused.
func receive(r *http.Request, dest string) (int, string, error) {
	mr, err := r.MultipartReader()
	if err != nil {
		return 0, "", fmt.Errorf("invalid content type: %w", err)
	}
	var digest, checksum string
	entries := 0
	for {
		part, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			return 0, "", fmt.Errorf("multipart: %w", err)
		}
		switch part.FormName() {
		case "archive":
			h := sha256.New()
			entries, err = extract(io.TeeReader(part, h), dest)
			if err != nil {
				return 0, "", err
			}
			// Hash every byte of the part, as Wings does.
			if _, err := io.Copy(h, part); err != nil {
				return 0, "", err
			}
			digest = hex.EncodeToString(h.Sum(nil))
		case "checksum":
			if digest == "" {
				return 0, "", errors.New("archive must be sent before the checksum")
			}
			b, err := io.ReadAll(io.LimitReader(part, 1024))
			if err != nil {
				return 0, "", err
			}
			checksum = strings.TrimSpace(string(b))
		default:
			// Wings skips parts it does not know (ferry's configuration).
			if _, err := io.Copy(io.Discard, part); err != nil {
				return 0, "", err
			}
		}
	}
	if digest == "" || checksum == "" {
		return 0, "", errors.New("missing archive or checksum")
	}
	if digest != checksum {
		return 0, "", fmt.Errorf("checksums don't match: %s != %s", digest, checksum)
	}
	return entries, digest, nil
}

func serve(dest string) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fail("%v", err)
	}
	fmt.Printf("port %d\n", ln.Addr().(*net.TCPAddr).Port)
	done := make(chan string, 1)
	mux := http.NewServeMux()
	mux.HandleFunc("/api/transfers", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		entries, digest, err := receive(r, dest)
		if err != nil {
			http.Error(w, fmt.Sprintf(`{"error":%q}`, err.Error()), http.StatusBadRequest)
			done <- "refused " + err.Error()
			return
		}
		w.WriteHeader(http.StatusOK)
		done <- fmt.Sprintf("received %d %s", entries, digest)
	})
	go func() {
		if err := http.Serve(ln, mux); err != nil {
			fail("%v", err)
		}
	}()
	select {
	case line := <-done:
		// Let the answer reach the client before the process goes.
		time.Sleep(200 * time.Millisecond)
		fmt.Println(line)
	case <-time.After(120 * time.Second):
		fail("no transfer within 120 s")
	}
}
