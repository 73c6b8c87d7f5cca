package httpgw

func (s *Server) stateDirForTest() string { return s.stateDir }
