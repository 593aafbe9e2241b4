package server

import "bytes"

// AppendCRLFToLF appends src to dst with every CR LF pair turned into LF; other
// CRs are kept. cr says the previous chunk ended in a CR not yet written;
// the returned bool says the same of src. The QMTP (CR mode) and SMTP
// servers store messages with LF line ends through it.
func AppendCRLFToLF(dst, src []byte, cr bool) ([]byte, bool) {
	for len(src) > 0 {
		if cr {
			cr = false
			if src[0] == '\n' {
				dst = append(dst, '\n')
				src = src[1:]
				continue
			}
			dst = append(dst, '\r')
		}
		i := bytes.IndexByte(src, '\r')
		if i < 0 {
			return append(dst, src...), false
		}
		dst = append(dst, src[:i]...)
		cr = true
		src = src[i+1:]
	}
	return dst, cr
}
