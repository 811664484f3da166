// Pelican Wings' side of the dialect tests (tests/it/transfer_dialects_go.rs),
// built together with read_tgz.go (whose pack and extract it uses). Written
// after Pelican Wings' server/transfer/source.go and archive.go (the
// sender) and router/router_transfer.go (the receiver): the same part
// names, order, mime/multipart calls and checks.
//
//	read_tgz pelican-send URL AUTH DIR BACKUPDIR LOGDIR SERVER [BACKUP...]
//	    sends DIR as a Pelican source does: a chunked POST with parts
//	    "archive" (archive.tar.gz), "checksum_archive" (its SHA-256), then
//	    for each file of BACKUPDIR/SERVER/ (os.ReadDir order) whose name is
//	    a listed BACKUP + ".tar.gz": "backup_<name>" and
//	    "checksum_backup_<name>", then "install_logs" (install.log) when
//	    LOGDIR/install/SERVER.log exists. Prints the status and body.
//	read_tgz pelican-serve DEST BACKUPDIR LOGDIR KEY PANEL PANELAUTH
//	    receives one transfer as a Pelican destination does: the bearer
//	    JWT checked (HS256 with KEY; its sub names the server), the body
//	    read with mime/multipart, the archive extracted into DEST while
//	    hashed, backups written to BACKUPDIR/<server>/<name>, the install
//	    log to LOGDIR/install/<server>.log, every checksum compared as the
//	    exact string sent; then the transfer reported to the panel at PANEL
//	    (POST /api/remote/servers/<server>/transfer/success or failure,
//	    Authorization PANELAUTH) before a 200, after an error answer.
//	    Prints "port N", then "received ENTRIES SHA256 BACKUPS LOGBYTES"
//	    or "refused REASON".
package main

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"
)

func pelicanSend(url, auth, dir, backupDir, logDir, server string, backups []string) {
	body, writer := io.Pipe()
	mp := multipart.NewWriter(writer)
	go func() {
		err := func() error {
			dest, err := mp.CreateFormFile("archive", "archive.tar.gz")
			if err != nil {
				return err
			}
			h := sha256.New()
			if err := pack(dir, io.MultiWriter(dest, h)); err != nil {
				return err
			}
			if err := mp.WriteField("checksum_archive", hex.EncodeToString(h.Sum(nil))); err != nil {
				return err
			}
			if err := streamBackups(mp, filepath.Join(backupDir, server), backups); err != nil {
				return err
			}
			// As Pelican: a log that is missing or unreadable is skipped.
			logPath := filepath.Join(logDir, "install", server+".log")
			if f, err := os.Open(logPath); err == nil {
				defer f.Close()
				part, err := mp.CreateFormFile("install_logs", "install.log")
				if err != nil {
					return err
				}
				if _, err := io.Copy(part, f); err != nil {
					return err
				}
			}
			return mp.Close()
		}()
		writer.CloseWithError(err)
	}()
	req, err := http.NewRequest(http.MethodPost, url, body)
	if err != nil {
		fail("%v", err)
	}
	req.Header.Set("Authorization", auth)
	req.Header.Set("Content-Type", mp.FormDataContentType())
	res, err := (&http.Client{Timeout: 0}).Do(req)
	if err != nil {
		fail("%v", err)
	}
	defer res.Body.Close()
	answer, _ := io.ReadAll(io.LimitReader(res.Body, 64*1024))
	fmt.Printf("%d %s\n", res.StatusCode, strings.TrimSpace(string(answer)))
}

// streamBackups sends the listed backups found in dir, each followed by
// its SHA-256, in directory order (Archive.StreamBackups).
func streamBackups(mp *multipart.Writer, dir string, backups []string) error {
	if len(backups) == 0 {
		return nil
	}
	entries, err := os.ReadDir(dir)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		return err
	}
	wanted := map[string]bool{}
	for _, b := range backups {
		wanted[b+".tar.gz"] = true
	}
	for _, entry := range entries {
		if entry.IsDir() || !strings.HasSuffix(entry.Name(), ".tar.gz") || !wanted[entry.Name()] {
			continue
		}
		f, err := os.Open(filepath.Join(dir, entry.Name()))
		if err != nil {
			return err
		}
		h := sha256.New()
		part, err := mp.CreateFormFile("backup_"+entry.Name(), entry.Name())
		if err != nil {
			f.Close()
			return err
		}
		_, err = io.Copy(part, io.TeeReader(f, h))
		f.Close()
		if err != nil {
			return err
		}
		if err := mp.WriteField("checksum_backup_"+entry.Name(), hex.EncodeToString(h.Sum(nil))); err != nil {
			return err
		}
	}
	return nil
}

// jwtSubject checks an HS256 token's signature with key and returns its
// sub (tokens.ParseToken and TransferPayload.Subject).
func jwtSubject(token string, key []byte) (string, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return "", errors.New("malformed token")
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(parts[0] + "." + parts[1]))
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil || !hmac.Equal(sig, mac.Sum(nil)) {
		return "", errors.New("invalid signature")
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return "", err
	}
	var claims struct {
		Sub string `json:"sub"`
	}
	if err := json.Unmarshal(payload, &claims); err != nil {
		return "", err
	}
	return claims.Sub, nil
}

type pelicanResult struct {
	entries  int
	digest   string
	backups  int
	logBytes int64
}

// pelicanReceive is postTransfers after the token: the multipart loop and
// the checks that follow it, in Pelican's order and words.
func pelicanReceive(r *http.Request, dest, backupDir, logDir, server string) (pelicanResult, error) {
	var res pelicanResult
	mediaType, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil {
		return res, err
	}
	if !strings.HasPrefix(mediaType, "multipart/") {
		return res, fmt.Errorf("invalid content type \"%s\", expected \"multipart/form-data\"", mediaType)
	}
	mr := multipart.NewReader(r.Body, params["boundary"])
	var (
		hasArchive              bool
		archiveChecksum         string
		archiveChecksumReceived string
		calculated              = map[string]string{}
		received                = map[string]string{}
	)
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			return res, err
		}
		name := p.FormName()
		switch {
		case name == "archive":
			hasArchive = true
			// Only what the extraction reads is hashed: Pelican hashes the
			// TeeReader its extractor pulls from and nothing after it.
			h := sha256.New()
			if res.entries, err = extractTar(io.TeeReader(p, h), dest, false); err != nil {
				return res, err
			}
			archiveChecksum = hex.EncodeToString(h.Sum(nil))
		case strings.HasPrefix(name, "checksum_archive"):
			b, err := io.ReadAll(p)
			if err != nil {
				return res, err
			}
			archiveChecksumReceived = string(b)
		case name == "install_logs":
			dir := filepath.Join(logDir, "install")
			if err := os.MkdirAll(dir, 0o755); err != nil {
				break // not fatal, as in Pelican
			}
			f, err := os.Create(filepath.Join(dir, server+".log"))
			if err != nil {
				break
			}
			res.logBytes, _ = io.Copy(f, p)
			f.Close()
		case strings.HasPrefix(name, "backup_"):
			backupName := strings.TrimPrefix(name, "backup_")
			dir := filepath.Join(backupDir, server)
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return res, fmt.Errorf("failed to create backup directory: %w", err)
			}
			f, err := os.Create(filepath.Join(dir, backupName))
			if err != nil {
				return res, fmt.Errorf("failed to create backup file %s: %w", backupName, err)
			}
			h := sha256.New()
			if _, err := io.Copy(f, io.TeeReader(p, h)); err != nil {
				f.Close()
				return res, fmt.Errorf("failed to stream backup file %s: %w", backupName, err)
			}
			if err := f.Close(); err != nil {
				return res, err
			}
			calculated[backupName] = hex.EncodeToString(h.Sum(nil))
		case strings.HasPrefix(name, "checksum_backup_"):
			backupName := strings.TrimPrefix(name, "checksum_backup_")
			b, err := io.ReadAll(p)
			if err != nil {
				return res, err
			}
			received[backupName] = string(b)
		}
		// Any other part (ferry's configuration and checksum) is skipped
		// by NextPart.
	}
	if hasArchive {
		if archiveChecksumReceived == "" {
			return res, errors.New("archive checksum missing")
		}
		if archiveChecksum != archiveChecksumReceived {
			return res, errors.New("archive checksum mismatch")
		}
	}
	for backupName, sum := range calculated {
		got, ok := received[backupName]
		if !ok {
			return res, fmt.Errorf("checksum missing for backup %s", backupName)
		}
		if sum != got {
			return res, fmt.Errorf("backup %s checksum mismatch", backupName)
		}
	}
	if !hasArchive {
		return res, errors.New("missing archive")
	}
	res.digest = archiveChecksum
	res.backups = len(calculated)
	return res, nil
}

// reportTransfer is SetTransferStatus: POST /servers/<uuid>/transfer/<state>
// on the panel's remote API.
func reportTransfer(panel, auth, server string, successful bool) {
	if panel == "" || panel == "-" {
		return
	}
	state := "failure"
	if successful {
		state = "success"
	}
	req, err := http.NewRequest(http.MethodPost,
		fmt.Sprintf("%s/api/remote/servers/%s/transfer/%s", strings.TrimRight(panel, "/"), server, state), nil)
	if err != nil {
		return
	}
	req.Header.Set("Authorization", auth)
	req.Header.Set("Accept", "application/vnd.pterodactyl.v1+json")
	if res, err := (&http.Client{Timeout: 30 * time.Second}).Do(req); err == nil {
		res.Body.Close()
	}
}

func pelicanServe(dest, backupDir, logDir, key, panel, panelAuth string) {
	ln := listenAndSay()
	var outcome outcomeBox
	mux := http.NewServeMux()
	mux.HandleFunc("/api/transfers", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		tell := outcome.tell
		auth := strings.SplitN(r.Header.Get("Authorization"), " ", 2)
		if len(auth) != 2 || auth[0] != "Bearer" {
			http.Error(w, `{"error":"The required authorization heads were not present in the request."}`, http.StatusUnauthorized)
			tell("refused no bearer token")
			return
		}
		server, err := jwtSubject(auth[1], []byte(key))
		if err != nil {
			http.Error(w, fmt.Sprintf(`{"error":%q}`, err.Error()), http.StatusForbidden)
			tell("refused " + err.Error())
			return
		}
		res, err := pelicanReceive(r, dest, backupDir, logDir, server)
		if err != nil {
			// CaptureAndAbort answers, then the deferred report runs.
			http.Error(w, fmt.Sprintf(`{"error":%q}`, err.Error()), http.StatusInternalServerError)
			reportTransfer(panel, panelAuth, server, false)
			tell("refused " + err.Error())
			return
		}
		// The deferred report runs before gin writes the 200.
		reportTransfer(panel, panelAuth, server, true)
		w.WriteHeader(http.StatusOK)
		tell(fmt.Sprintf("received %d %s %d %d", res.entries, res.digest, res.backups, res.logBytes))
	})
	serveUntilAnswered(ln, mux, &outcome)
}
