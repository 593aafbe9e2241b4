package serve

import (
	"context"
	"crypto/tls"
	"fmt"
	"time"

	"qbox/proto"
	"qbox/proto/smtp"
)

// SMTP is the protocol name of the SMTP listener (--smtp, --stdio smtp,
// the systemd socket name).
const SMTP = "smtp"

// SMTPNotAuthorized is the greeting a client outside SMTP's access list
// gets before the connection is closed (RFC 5321 3.1: 554 instead of 220).
const SMTPNotAuthorized = "554 5.7.1 sorry, not authorized to use this service (#5.7.1)\r\n"

// newSMTPServer builds the SMTP server of a Config: the limits, envelope
// budget, recipient check and logger of QMTP's.
func (s *Server) newSMTPServer(envelopes *proto.Budget) *smtp.Server {
	return &smtp.Server{
		Backend:          s.cfg.Backend,
		Limits:           smtp.ServerLimits{MaxMessageSize: s.cfg.MaxSize, MaxRecipients: s.cfg.MaxRecipients},
		Hostname:         s.cfg.Hostname,
		TLSConfig:        s.cfg.SMTPTLS,
		Timeout:          s.cfg.Timeout,
		SessionLimit:     s.cfg.SessionLimit,
		Logger:           s.cfg.Logger,
		RecipientAllowed: s.recipientCheck(),
		Envelopes:        envelopes,
	}
}

// smtpSession runs one SMTP session and logs its connection line.
func (s *Server) smtpSession(ctx context.Context, c proto.Conn, peer proto.Peer, start time.Time) {
	res, err := s.smtp.ServeConn(ctx, c, peer)
	attrs := []any{"proto", "SMTP", "remote", peer.RemoteIP, "ms", time.Since(start).Milliseconds(),
		"messages", res.Messages, "accepted", res.Accepted, "deferred", res.Deferred, "rejected", res.Rejected,
		"bytes", res.Bytes, "tls", res.TLS}
	if err != nil {
		s.cfg.Logger.Info("connection ended", append(attrs, "err", err.Error())...)
	} else {
		s.cfg.Logger.Info("connection", attrs...)
	}
}

// refuseSMTP greets a client outside the access list with 554 and logs it.
func (s *Server) refuseSMTP(w proto.Conn, ip string, start time.Time) {
	w.SetWriteDeadline(time.Now().Add(s.cfg.Timeout))
	_, err := w.Write([]byte(SMTPNotAuthorized))
	attrs := []any{"proto", SMTP, "remote", ip, "ms", time.Since(start).Milliseconds()}
	if err != nil {
		attrs = append(attrs, "err", err.Error())
	}
	s.cfg.Logger.Warn("client not authorized", attrs...)
}

// LoadSMTPTLS reads the certificate and key STARTTLS offers.
func LoadSMTPTLS(certFile, keyFile string) (*tls.Config, error) {
	if certFile == "" && keyFile == "" {
		return nil, nil
	}
	if certFile == "" || keyFile == "" {
		return nil, fmt.Errorf("--smtp-cert and --smtp-key go together")
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}
