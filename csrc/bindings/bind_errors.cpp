// C++ exceptions of the core -> the Python classes of jouletrace.errors.
#include <pybind11/pybind11.h>

#include "bindings.hpp"
#include "jouletrace/errors.hpp"
#include "jouletrace/record.hpp"

namespace py = pybind11;

namespace jouletrace::py_bind {

namespace {
void raise_as(const char* cls, const std::exception& e) {
  py::object type = py::module_::import("jouletrace.errors").attr(cls);
  PyErr_SetString(type.ptr(), e.what());
}
}  // namespace

void bind_errors(py::module_& m) {
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const SourceUnavailable& e) {
      raise_as("SourceUnavailableError", e);
    } catch (const PermissionDenied& e) {
      raise_as("PermissionDeniedError", e);
    } catch (const DeviceLost& e) {
      raise_as("DeviceLostError", e);
    } catch (const InvalidArgument& e) {
      raise_as("InvalidArgumentError", e);
    } catch (const Error& e) {
      raise_as("JouletraceError", e);
    }
  });
  m.attr("ERROR_NONE") = static_cast<int>(kErrorNone);
  m.attr("ERROR_GENERIC") = static_cast<int>(kErrorGeneric);
  m.attr("ERROR_DEVICE_LOST") = static_cast<int>(kErrorDeviceLost);
  m.attr("ERROR_UNAVAILABLE") = static_cast<int>(kErrorUnavailable);
  m.attr("ERROR_PERMISSION") = static_cast<int>(kErrorPermission);
  m.attr("STATUS_OK") = static_cast<int>(kStatusOk);
  m.attr("STATUS_PARTIAL") = static_cast<int>(kStatusPartial);
  m.attr("STATUS_DEVICE_LOST") = static_cast<int>(kStatusDeviceLost);
  m.attr("STATUS_ERROR") = static_cast<int>(kStatusError);
  m.attr("MAX_CHANNELS") = static_cast<int>(kMaxChannels);
}

}  // namespace jouletrace::py_bind
